"""Slack and Discord endpoints."""

app_name = "chatops_app"
urlpatterns: list = []
