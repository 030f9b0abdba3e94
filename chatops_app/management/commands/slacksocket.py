"""`python manage.py slacksocket` — serve `/vibe` and its buttons over Slack's Socket Mode.

For factories without a public HTTPS URL: the process opens a WebSocket to Slack with the
app-level token `VIBE_SLACK_APP_TOKEN` and answers what comes down it (`chatops_app.slack.socket`).
`runfactory` starts it when the token is set. SIGTERM or Ctrl-C stops taking envelopes, lets
those in hand finish and exits 0.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from slack_sdk.errors import SlackApiError

from chatops_app.slack.socket import SocketDoor
from vibe_project.commands import set_log_level, stopped_by_signals

# Slack's words for a refused app-level token, with what to check.
TOKEN_ERRORS = {
    "invalid_auth": "VIBE_SLACK_APP_TOKEN is not a valid app-level token",
    "not_allowed_token_type": "VIBE_SLACK_APP_TOKEN must be an app-level token (xapp-…)",
    "missing_scope": "the app-level token needs the connections:write scope",
    "token_revoked": "the app-level token was revoked; make a new one",
}


class Command(BaseCommand):
    help = "Serve /vibe and its buttons over Slack's Socket Mode (needs VIBE_SLACK_APP_TOKEN)."

    def handle(self, *args, verbosity: int, **options) -> None:
        set_log_level("chatops_app", verbosity)
        token = settings.VIBE_SLACK_APP_TOKEN
        if not token:
            raise CommandError(
                "set VIBE_SLACK_APP_TOKEN: Basic Information → App-Level Tokens → Generate, "
                "with the connections:write scope (xapp-…)"
            )
        if not token.startswith("xapp-"):
            raise CommandError(
                "VIBE_SLACK_APP_TOKEN is not an app-level token (they start with xapp-; "
                "the bot token xoxb-… goes in VIBE_SLACK_BOT_TOKEN)"
            )
        door = SocketDoor(app_token=token)
        stopping = threading.Event()  # only a flag: the main thread closes the door
        with stopped_by_signals(stopping.set):
            self._serve(door, stopping)
        self.stdout.write("slacksocket: stopped")

    def _serve(self, door: SocketDoor, stopping: threading.Event) -> None:
        try:
            try:
                door.connect()
            except SlackApiError as exc:
                code = str(exc.response.get("error") or "")
                hint = TOKEN_ERRORS.get(code, "check VIBE_SLACK_APP_TOKEN and VIBE_SLACK_API_URL")
                raise CommandError(
                    f"Slack refused apps.connections.open ({code}): {hint}"
                ) from None
            except OSError as exc:
                raise CommandError(f"could not reach Slack ({exc}); will be retried") from None
            self.stdout.write(
                "slacksocket: connected to Slack's Socket Mode; serving /vibe and its buttons"
            )
            stopping.wait()
        finally:
            door.close()
