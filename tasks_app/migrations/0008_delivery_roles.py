"""The delivery permissions, in the roles: Operators ask for changes, Approvers also merge."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GRANTS = {
    "Operator": ["rework_task"],
    "Approver": ["rework_task", "merge_task"],
}


def grant(apps, schema_editor):
    from django.apps import apps as global_apps

    create_permissions(global_apps.get_app_config("tasks_app"), apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in GRANTS.items():
        group = Group.objects.filter(name=role).first()
        if group is None:  # a team that deleted the role keeps it deleted
            continue
        perms = Permission.objects.filter(
            content_type__app_label="tasks_app", codename__in=codenames
        )
        group.permissions.add(*perms)


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(
        content_type__app_label="tasks_app", codename__in=["rework_task", "merge_task"]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0007_delivery"), ("tasks_app", "0002_roles")]
    operations = [migrations.RunPython(grant, revoke)]
