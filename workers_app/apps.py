from django.apps import AppConfig


class WorkersConfig(AppConfig):
    verbose_name = "Workers"
    name = "workers_app"
    default_auto_field = "django.db.models.BigAutoField"
