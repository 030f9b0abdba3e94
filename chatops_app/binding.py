"""Is this verified request from *our* Slack workspace or Discord server?

A valid signature only proves the request came from the chat service for our app. A Slack app can
be installed in other workspaces (or distributed), and a Discord application can be added to any
server or used in DMs; their users' ids may even collide with ones we linked. So once the
signature checks out, the request's team, Enterprise Grid org and app (Slack) or guild and
application (Discord) are compared with the settings. Each function returns why the request is
not ours, or "" when it is; the views answer a reason with 403 and change nothing.

A setting left empty accepts any value (as before these settings existed); `checks.py` warns.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _check(what: str, value: object, allowed: list[str] | str, setting: str) -> str:
    """Why `value` is not allowed by the setting, or "" (also when the setting is empty)."""
    allowed = [allowed] if isinstance(allowed, str) else list(allowed)
    allowed = [a for a in allowed if a]
    if not allowed:
        return ""
    value = value if isinstance(value, str) else ""
    if not value:
        return f"no {what} in the request, and {setting} is set"
    if value not in allowed:
        return f"{what} {value[:40]!r} is not in {setting}"
    return ""


def _first(*reasons: str) -> str:
    return next((reason for reason in reasons if reason), "")


def slack_command_refusal(form: Mapping[str, str]) -> str:
    """Why a slash command (its form fields) is not from our workspace and app, or ""."""
    return _first(
        _check("team", form.get("team_id"), settings.VIBE_SLACK_TEAM_IDS, "VIBE_SLACK_TEAM_IDS"),
        _check(
            "enterprise",
            form.get("enterprise_id"),
            settings.VIBE_SLACK_ENTERPRISE_IDS,
            "VIBE_SLACK_ENTERPRISE_IDS",
        ),
        _check("app", form.get("api_app_id"), settings.VIBE_SLACK_APP_ID, "VIBE_SLACK_APP_ID"),
    )


def slack_interaction_refusal(payload: Mapping) -> str:
    """Why a `block_actions` payload is not from our workspace and app, or "".

    The clicker's own team (`user.team_id`) is checked too when Slack sends it: in a channel
    shared with another organisation (Slack Connect) someone from outside can click our button.
    """
    teams = settings.VIBE_SLACK_TEAM_IDS
    user_team = _dict(payload.get("user")).get("team_id")
    return _first(
        _check("team", _dict(payload.get("team")).get("id"), teams, "VIBE_SLACK_TEAM_IDS"),
        _check("user's team", user_team, teams, "VIBE_SLACK_TEAM_IDS") if user_team else "",
        _check(
            "enterprise",
            _dict(payload.get("enterprise")).get("id"),
            settings.VIBE_SLACK_ENTERPRISE_IDS,
            "VIBE_SLACK_ENTERPRISE_IDS",
        ),
        _check("app", payload.get("api_app_id"), settings.VIBE_SLACK_APP_ID, "VIBE_SLACK_APP_ID"),
    )


def slack_workspace(source: Mapping) -> str:
    """The team id a Slack request comes from: a command's `team_id`, a click's `team.id`."""
    team = source.get("team_id") or _dict(source.get("team")).get("id")
    return team if isinstance(team, str) else ""


def discord_refusal(interaction: Mapping) -> str:
    """Why an interaction is not from our application and servers, or "".

    A DM has no guild: with VIBE_DISCORD_GUILD_IDS set, DMs are refused too, since anyone who
    shares a server with the bot can open one.
    """
    guild = interaction.get("guild_id")
    guilds = settings.VIBE_DISCORD_GUILD_IDS
    if guilds and not guild:
        return "a DM (no guild), and VIBE_DISCORD_GUILD_IDS is set"
    return _first(
        _check(
            "application",
            interaction.get("application_id"),
            settings.VIBE_DISCORD_APPLICATION_ID,
            "VIBE_DISCORD_APPLICATION_ID",
        ),
        _check("guild", guild, guilds, "VIBE_DISCORD_GUILD_IDS"),
    )


def discord_workspace(interaction: Mapping) -> str:
    """The guild an interaction comes from; "" for a DM."""
    guild = interaction.get("guild_id")
    return guild if isinstance(guild, str) else ""
