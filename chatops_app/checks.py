"""`manage.py check` warnings for chat doors that are open to any workspace or server."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register


@register()
def chat_bound_to_our_workspace(app_configs, **kwargs) -> list[Warning]:
    """A signing secret or public key without the ids of our own Slack team or Discord server.

    The signature proves a request came from Slack or Discord for our app, not from our
    workspace: an app installed elsewhere, or a Discord bot added to another server, would be
    heard too, and chat user ids are only unique within one workspace.
    """
    warnings = []
    if settings.VIBE_SLACK_SIGNING_SECRET and not (
        settings.VIBE_SLACK_TEAM_IDS or settings.VIBE_SLACK_ENTERPRISE_IDS
    ):
        warnings.append(
            Warning(
                "Slack requests are accepted from any workspace.",
                hint="Set VIBE_SLACK_TEAM_IDS to your team id (T…), and VIBE_SLACK_APP_ID; "
                "see docs/chatops.md.",
                id="chatops.W001",
            )
        )
    if settings.VIBE_DISCORD_PUBLIC_KEY and not settings.VIBE_DISCORD_GUILD_IDS:
        warnings.append(
            Warning(
                "Discord interactions are accepted from any server, and from DMs.",
                hint="Set VIBE_DISCORD_GUILD_IDS to your server's id (and "
                "VIBE_DISCORD_APPLICATION_ID); see docs/chatops.md.",
                id="chatops.W002",
            )
        )
    return warnings
