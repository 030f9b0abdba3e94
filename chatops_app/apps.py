from django.apps import AppConfig


class ChatopsConfig(AppConfig):
    verbose_name = "ChatOps"
    name = "chatops_app"
    default_auto_field = "django.db.models.BigAutoField"
