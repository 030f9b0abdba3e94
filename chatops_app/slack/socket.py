"""Slack's Socket Mode: `/vibe` and its buttons over a WebSocket we open, so no public URL.

With an app-level token (`VIBE_SLACK_APP_TOKEN`, xapp-… with `connections:write`) the door asks
`apps.connections.open` (at `VIBE_SLACK_API_URL`) for a WebSocket URL, and Slack sends each slash
command and click down it as an envelope. The WebSocket is the trust here: only Slack holds the
URL it handed to our token, so there is no request signature to check. Everything after that is
the HTTP views' path: the workspace binding (`binding.py`), then `views.handle_command` and
`views.handle_interaction` with the same grammar, links and permissions.

Slack wants each envelope acknowledged within 3 seconds. A click is acknowledged first and handled
after (the outbox updates the message through its response_url, as over HTTP). A command's answer
rides on its acknowledgement; should it take longer than `ACK_BUDGET_SECONDS`, the acknowledgement
says so and the answer follows through the outbox to the command's response_url. An envelope
Slack sends again (it does when an acknowledgement came late) is acknowledged and changes nothing.

The client is slack-sdk's built-in `SocketModeClient`: the standard library only, no
websocket-client or aiohttp to install. It runs handlers on its own threads, each with its own
database connection, and reconnects by itself when Slack closes the socket (it does every few
hours) or the network drops.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import close_old_connections
from slack_sdk import WebClient
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from .. import binding
from ..doors import TROUBLE_TEXT
from ..models import first_sighting, reply_to_click
from ..signing import MAX_AGE_SECONDS
from . import views

logger = logging.getLogger(__name__)

DOOR = "slack-socket"
# Well inside Slack's 3 s, leaving room for the acknowledgement's own trip.
ACK_BUDGET_SECONDS = 2.0
# How often the client pings Slack; a socket silent for 4 pings is replaced.
PING_INTERVAL_SECONDS = 10.0
NOT_OURS_TEXT = "This Slack workspace is not allowed to use this Vibe Factory."
LATE_TEXT = "Still working on it; the answer follows here."


def _ephemeral(text: str) -> dict:
    return {"response_type": "ephemeral", "text": text}


class SocketDoor:
    """One Socket Mode connection serving `/vibe` and its buttons; `connect()`, then `close()`."""

    def __init__(
        self,
        *,
        app_token: str,
        api_url: str | None = None,
        ack_budget: float = ACK_BUDGET_SECONDS,
        ping_interval: float = PING_INTERVAL_SECONDS,
    ) -> None:
        self.ack_budget = ack_budget
        web = WebClient(
            base_url=api_url or settings.VIBE_SLACK_API_URL,
            timeout=settings.VIBE_NOTIFY_TIMEOUT_SECONDS,  # type: ignore[arg-type]  # a float works
        )
        self.client = SocketModeClient(
            app_token=app_token, web_client=web, logger=logger, ping_interval=ping_interval
        )
        self.client.socket_mode_request_listeners.append(self.on_request)
        # Commands run here, so a slow one can be acknowledged before it is done.
        self._commands = ThreadPoolExecutor(max_workers=4, thread_name_prefix="slack-command")

    def connect(self) -> None:
        """Open the WebSocket (raises SlackApiError when Slack refuses the token)."""
        self.client.connect()

    def is_connected(self) -> bool:
        return self.client.is_connected()

    def close(self) -> None:
        """Stop taking envelopes, let those in hand finish and be acknowledged, then hang up."""
        client = self.client
        client.auto_reconnect_enabled = False
        client.closed = True  # its message loop hands out no more envelopes
        client.message_workers.shutdown(wait=True)
        self._commands.shutdown(wait=True)
        # The reading thread sits in recv() for up to 3 s at a time; waking it makes the
        # stop prompt instead of waiting that out.
        sock = getattr(client.current_session, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        client.close()

    # --- Envelopes --------------------------------------------------------------------------

    def on_request(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        """Every envelope with an id: acknowledged exactly once, whatever happens."""
        acked = False

        def ack(payload: dict | None = None) -> None:
            nonlocal acked
            if not acked:
                acked = True
                client.send_socket_mode_response(
                    SocketModeResponse(envelope_id=request.envelope_id, payload=payload)
                )

        close_old_connections()
        try:
            self._dispatch(request, ack)
        except Exception:  # never leave Slack waiting: it would show the person an error
            logger.exception("Slack Socket Mode %s envelope failed", request.type)
            ack(_ephemeral(TROUBLE_TEXT) if request.type == "slash_commands" else None)
        finally:
            close_old_connections()

    def _dispatch(self, request: SocketModeRequest, ack) -> None:
        if request.type not in ("slash_commands", "interactive"):
            ack()  # nothing else is subscribed to; acknowledged so Slack does not resend it
            return
        if not first_sighting(DOOR, request.envelope_id, window_seconds=MAX_AGE_SECONDS):
            logger.warning("ignored a resent Slack Socket Mode envelope %s", request.envelope_id)
            ack()
            return
        payload = request.payload if isinstance(request.payload, dict) else {}
        if request.type == "slash_commands":
            self._command(payload, ack)
        else:
            self._interaction(payload, ack)

    def _command(self, payload: Mapping, ack) -> None:
        form = {key: str(value) for key, value in payload.items() if isinstance(value, str | int)}
        refusal = binding.slack_command_refusal(form)
        if refusal:
            logger.warning("refused a Slack Socket Mode command: %s", refusal)
            ack(_ephemeral(NOT_OURS_TEXT))
            return
        answer = self._commands.submit(self._answer, form)
        try:
            ack(answer.result(timeout=self.ack_budget))
        except FutureTimeout:
            ack(_ephemeral(LATE_TEXT))
            url = form.get("response_url", "")
            if url.startswith(("https://", "http://")):
                answer.add_done_callback(lambda done: _answer_later(url, done.result()))

    @staticmethod
    def _answer(form: dict[str, str]) -> dict:
        close_old_connections()
        try:
            return views.handle_command(form)
        except Exception:
            logger.exception("Slack Socket Mode command failed")
            return _ephemeral(TROUBLE_TEXT)
        finally:
            close_old_connections()

    def _interaction(self, payload: Mapping, ack) -> None:
        ack()  # first: a click is answered through its response_url, as over HTTP
        refusal = binding.slack_interaction_refusal(payload)
        if refusal:
            logger.warning("refused a Slack Socket Mode interaction: %s", refusal)
            return
        views.handle_interaction(payload)  # its answer goes out through the outbox


def _answer_later(url: str, message: dict) -> None:
    """A slow command's answer goes out through the outbox, as a click's does: retried, not lost."""
    close_old_connections()
    try:
        reply_to_click(url, message)
    finally:
        close_old_connections()
