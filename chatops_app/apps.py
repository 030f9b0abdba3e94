from django.apps import AppConfig


class ChatopsConfig(AppConfig):
    verbose_name = "ChatOps"
    name = "chatops_app"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401 - registers the system checks
            receivers,  # noqa: F401 - connects the core's signals
        )
