"""GitHub's webhook."""

from django.urls import path

from . import views

app_name = "integrations_app"
urlpatterns = [
    path("github/webhook", views.github_webhook, name="github_webhook"),
]
