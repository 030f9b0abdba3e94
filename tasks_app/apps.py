from django.apps import AppConfig
from django.db.backends.signals import connection_created

from .sqlite import check_pragmas


class TasksConfig(AppConfig):
    name = "tasks_app"
    verbose_name = "Tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(check_pragmas, dispatch_uid="vibe_sqlite_pragmas")
