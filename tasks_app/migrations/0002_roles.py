"""Three roles out of the box: Viewer sees, Operator steers, Approver also approves."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "Viewer": [
        ("tasks_app", "view_task"),
        ("tasks_app", "view_taskhistory"),
        ("tasks_app", "view_run"),
        ("workers_app", "view_worker"),
        ("chatops_app", "view_notification"),
    ],
    "Operator": [
        ("tasks_app", "retry_task"),
        ("tasks_app", "cancel_task"),
        ("workers_app", "manage_workers"),
    ],
    "Approver": [("tasks_app", "approve_task")],
}


def create_roles(apps, schema_editor):
    # Permissions are normally made after all migrations; make them now so roles can hold them.
    from django.apps import apps as global_apps

    for app_label in ("tasks_app", "workers_app", "chatops_app"):
        create_permissions(global_apps.get_app_config(app_label), apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    granted: list = []
    for role, perms in ROLES.items():
        for app_label, codename in perms:
            granted.append(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*granted)  # each role includes the ones above it


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0001_initial"),
        ("workers_app", "0001_initial"),
        ("chatops_app", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
