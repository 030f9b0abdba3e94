"""Slack and Discord endpoints."""

from django.urls import path

from .discord import views as discord_views
from .slack import views as slack_views

app_name = "chatops_app"
urlpatterns = [
    path("slack/commands", slack_views.slack_commands, name="slack_commands"),
    path("slack/interactions", slack_views.slack_interactions, name="slack_interactions"),
    path("discord/interactions", discord_views.discord_interactions, name="discord_interactions"),
]
