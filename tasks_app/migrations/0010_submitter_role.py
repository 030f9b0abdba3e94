"""A Submitter role (puts work on the board), and Operators and Approvers may submit too."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

SUBMITTERS = ("Submitter", "Operator", "Approver")


def grant(apps, schema_editor):
    from django.apps import apps as global_apps

    create_permissions(global_apps.get_app_config("tasks_app"), apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    add = Permission.objects.get(content_type__app_label="tasks_app", codename="add_task")
    view = Permission.objects.filter(
        content_type__app_label__in=["tasks_app", "workers_app", "chatops_app"],
        codename__in=["view_task", "view_taskhistory", "view_run", "view_worker"],
    )
    submitter, _ = Group.objects.get_or_create(name="Submitter")
    submitter.permissions.add(*view)  # a Submitter sees the board it puts work on
    for name in SUBMITTERS:
        group = Group.objects.filter(name=name).first()
        if group is not None:
            group.permissions.add(add)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name="Submitter").delete()
    Permission = apps.get_model("auth", "Permission")
    add = Permission.objects.filter(content_type__app_label="tasks_app", codename="add_task")
    for group in Group.objects.filter(name__in=SUBMITTERS):
        group.permissions.remove(*add)


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0009_idempotency_key"), ("tasks_app", "0008_delivery_roles")]
    operations = [migrations.RunPython(grant, revoke)]
