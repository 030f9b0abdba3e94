from django.apps import AppConfig
from django.db.backends.signals import connection_created


class TasksConfig(AppConfig):
    name = "tasks_app"
    verbose_name = "Tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .db import check_sqlite_pragmas

        connection_created.connect(check_sqlite_pragmas, dispatch_uid="vibe_sqlite_pragmas")
