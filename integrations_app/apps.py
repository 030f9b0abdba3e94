from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    verbose_name = "Integrations"
    name = "integrations_app"
    default_auto_field = "django.db.models.BigAutoField"
