"""Slack and Discord endpoints."""

from django.urls import path

from . import views

app_name = "chatops_app"
urlpatterns = [
    path("slack/commands", views.slack_commands, name="slack_commands"),
    path("slack/interactions", views.slack_interactions, name="slack_interactions"),
    path("discord/interactions", views.discord_interactions, name="discord_interactions"),
]
