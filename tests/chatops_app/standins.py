"""A small HTTP server on 127.0.0.1 standing in for Slack's Web API and Discord's REST API.

Our clients take their base URL from settings (VIBE_SLACK_API_URL, VIBE_DISCORD_API_URL), so
tests point them here instead of patching our code. The stand-in records every request and can
be told to answer the next requests with an HTTP error, a rate limit, a Slack error, or to hang
past the client's timeout. Use `configured_standin(settings)` inside a fixture, or
`ChatStandIn()` as a context manager (and `subprocess_settings()` for subprocesses).

Routes:
    POST /slack/api/chat.postMessage                 -> {"ok": true, "channel": …, "ts": …}
    POST /slack/api/chat.update                      -> {"ok": true, …}, or message_not_found
    POST /discord/api/v10/channels/<id>/messages     -> a message object with an "id"
    PATCH /discord/api/v10/channels/<id>/messages/<m> -> the edited message, or 404 if unknown
    PUT  /discord/api/v10/applications/<id>/commands -> the commands, each given an "id"
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.standins.http import LocalServer, Reply, read_body, write_reply

SLACK_TOKEN = "xoxb-test-token"
DISCORD_TOKEN = "discord-test-token"
SLACK_CHANNEL = "C0VIBE"
DISCORD_CHANNEL = "900000000000000001"
DISCORD_APPLICATION = "800000000000000001"


@dataclass
class Recorded:
    """One request as the stand-in saw it, and how it answered (`answer`: "ok", "500", …)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    service: str
    answer: str = ""

    @property
    def ok(self) -> bool:
        return self.answer == "ok"


@dataclass
class _Plan:
    kind: str  # "status", "slack_error", "timeout"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


_DISCORD_MESSAGES = re.compile(r"^/discord/api/v10/channels/(?P<channel>[^/]+)/messages$")
_DISCORD_MESSAGE = re.compile(
    r"^/discord/api/v10/channels/(?P<channel>[^/]+)/messages/(?P<message>[^/]+)$"
)
_DISCORD_COMMANDS = re.compile(r"^/discord/api/v10/applications/(?P<app>[^/]+)/commands$")


class ChatStandIn(LocalServer):
    protocol = "HTTP/1.0"

    def __init__(self, *, slack_token: str = SLACK_TOKEN, discord_token: str = DISCORD_TOKEN):
        super().__init__()
        self.slack_token = slack_token
        self.discord_token = discord_token
        self.requests: list[Recorded] = []
        self.delay = 0.0  # seconds to think before each answer, to make senders overlap
        self._plans: deque[_Plan] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._release = threading.Event()
        # What a person would see in the channel now: messages by Slack ts / Discord id.
        self.slack_messages: dict[str, dict] = {}
        self.discord_messages: dict[str, dict] = {}
        self.start()

    # --- Addresses ---------------------------------------------------------------------------

    @property
    def slack_api_url(self) -> str:
        return f"{self.url}/slack/api/"

    @property
    def discord_api_url(self) -> str:
        return f"{self.url}/discord/api/v10"

    # --- Scripting the next answers ----------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 500, body: Any = None) -> None:
        """Answer the next `count` requests with `status` (a plain-text body unless given)."""
        for _ in range(count):
            self._plans.append(_Plan("status", status=status, body=body))

    def rate_limit_next(self, count: int = 1, *, retry_after: float = 1.0) -> None:
        """HTTP 429 with Retry-After (and Discord's JSON `retry_after`)."""
        for _ in range(count):
            self._plans.append(
                _Plan(
                    "status",
                    status=429,
                    body={"message": "You are being rate limited.", "retry_after": retry_after},
                    headers={"Retry-After": format(retry_after, "g")},
                )
            )

    def slack_error_next(self, error: str, count: int = 1) -> None:
        """Slack's way of refusing: HTTP 200 with {"ok": false, "error": …}."""
        for _ in range(count):
            self._plans.append(_Plan("slack_error", body={"ok": False, "error": error}))

    def timeout_next(self, count: int = 1, *, seconds: float = 2.0) -> None:
        """Hang for `seconds` (longer than the client's timeout), then drop the connection."""
        for _ in range(count):
            self._plans.append(_Plan("timeout", seconds=seconds))

    # --- Reading what arrived ----------------------------------------------------------------

    def received(self, service: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if service is None or r.service == service]

    def delivered(self, service: str | None = None) -> list[Recorded]:
        """Requests answered with success: what a person would see in the channel."""
        return [r for r in self.received(service) if r.ok]

    def posted(self, service: str) -> list[Recorded]:
        """Messages that got through (Slack chat.postMessage, Discord POST), not edits."""
        return [
            r
            for r in self.delivered(service)
            if r.path.endswith("chat.postMessage")
            or (r.method == "POST" and "/channels/" in r.path)
        ]

    def edits(self, service: str) -> list[Recorded]:
        """Edits that got through (Slack chat.update, Discord PATCH)."""
        return [
            r
            for r in self.delivered(service)
            if r.path.endswith("chat.update") or r.method == "PATCH"
        ]

    def delete_message(self, service: str, message_id: str) -> None:
        """Someone deleted the message in the channel: editing it fails from now on."""
        with self._lock:
            (self.slack_messages if service == "slack" else self.discord_messages).pop(message_id)

    def close(self) -> None:
        self._release.set()
        super().close()

    # --- Serving -----------------------------------------------------------------------------

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.command not in ("POST", "PUT", "PATCH"):
            write_reply(handler, Reply(501, "Unsupported method"))
            return
        raw = read_body(handler)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        path = handler.path.split("?", 1)[0]
        service = (
            "slack" if path.startswith("/slack/") else "discord" if "/discord/" in path else "?"
        )
        record = Recorded(handler.command, path, dict(handler.headers.items()), body, service)
        with self._lock:
            self.requests.append(record)
            plan = self._plans.popleft() if self._plans else None

        if self.delay:
            time.sleep(self.delay)
        if plan is not None and plan.kind == "timeout":
            record.answer = "timeout"
            self._release.wait(plan.seconds)
            handler.close_connection = True
            return
        if plan is not None and plan.kind == "status":
            record.answer = str(plan.status)
            payload = plan.body if plan.body is not None else "upstream error"
            self._reply(handler, plan.status, payload, plan.headers)
            return
        if plan is not None and plan.kind == "slack_error":
            record.answer = "slack_error"
            self._reply(handler, 200, plan.body)
            return

        status, payload = self._route(handler, path, record)
        record.answer = "ok" if status < 300 else str(status)
        self._reply(handler, status, payload)

    def _route(self, handler, path: str, record: Recorded) -> tuple[int, Any]:
        auth = handler.headers.get("Authorization", "")
        body = record.body if isinstance(record.body, dict) else {}
        if record.service == "slack":
            methods = ("/slack/api/chat.postMessage", "/slack/api/chat.update")
            if handler.command != "POST" or path not in methods:
                return 404, {"ok": False, "error": "unknown_method"}
            if auth != f"Bearer {self.slack_token}":
                record.answer = "slack_error"
                return 200, {"ok": False, "error": "invalid_auth"}
            channel = body.get("channel", "")
            if path.endswith("chat.update"):
                with self._lock:
                    if body.get("ts") not in self.slack_messages:
                        record.answer = "slack_error"
                        return 200, {"ok": False, "error": "message_not_found"}
                    self.slack_messages[body["ts"]] = body
                return 200, {"ok": True, "channel": channel, "ts": body["ts"]}
            ts = f"{1_700_000_000 + next(self._ids)}.000100"
            with self._lock:
                self.slack_messages[ts] = body
            return 200, {"ok": True, "channel": channel, "ts": ts}
        if auth != f"Bot {self.discord_token}":
            return 401, {"message": "401: Unauthorized", "code": 0}
        if handler.command == "POST" and (match := _DISCORD_MESSAGES.match(path)):
            message = {
                "id": str(1_100_000_000_000_000_000 + next(self._ids)),
                "channel_id": match["channel"],
                "content": body.get("content", ""),
                "components": body.get("components", []),
            }
            with self._lock:
                self.discord_messages[message["id"]] = message
            return 200, message
        if handler.command == "PATCH" and (match := _DISCORD_MESSAGE.match(path)):
            with self._lock:
                message = self.discord_messages.get(match["message"])
                if message is None:
                    return 404, {"message": "Unknown Message", "code": 10008}
                message.update({k: v for k, v in body.items() if k in ("content", "components")})
            return 200, message
        if handler.command == "PUT" and _DISCORD_COMMANDS.match(path):
            commands = record.body if isinstance(record.body, list) else []
            return 200, [
                {**command, "id": str(1_200_000_000_000_000_000 + next(self._ids))}
                for command in commands
            ]
        return 404, {"message": "404: Not Found", "code": 0}

    @staticmethod
    def _reply(handler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        ctype = "text/plain; charset=utf-8" if isinstance(payload, str) else "application/json"
        reply = Reply(status, payload, {"Content-Type": ctype, **(headers or {})})
        with contextlib.suppress(OSError):  # the client gave up (timed out); nothing to tell
            write_reply(handler, reply)


@contextmanager
def configured_standin(settings) -> Iterator[ChatStandIn]:
    """A running stand-in with Slack and Discord settings pointed at it (pytest-django's
    `settings` fixture undoes the changes). Wrap it in a fixture in your test module."""
    with ChatStandIn() as standin:
        settings.VIBE_SLACK_API_URL = standin.slack_api_url
        settings.VIBE_SLACK_BOT_TOKEN = standin.slack_token
        settings.VIBE_SLACK_CHANNEL = SLACK_CHANNEL
        settings.VIBE_DISCORD_API_URL = standin.discord_api_url
        settings.VIBE_DISCORD_BOT_TOKEN = standin.discord_token
        settings.VIBE_DISCORD_CHANNEL_ID = DISCORD_CHANNEL
        settings.VIBE_DISCORD_APPLICATION_ID = DISCORD_APPLICATION
        yield standin


def subprocess_settings(standin: ChatStandIn) -> dict[str, str]:
    """The same configuration as environment variables, for `manage.py` subprocesses."""
    return {
        "VIBE_SLACK_API_URL": standin.slack_api_url,
        "VIBE_SLACK_BOT_TOKEN": standin.slack_token,
        "VIBE_SLACK_CHANNEL": SLACK_CHANNEL,
        "VIBE_DISCORD_API_URL": standin.discord_api_url,
        "VIBE_DISCORD_BOT_TOKEN": standin.discord_token,
        "VIBE_DISCORD_CHANNEL_ID": DISCORD_CHANNEL,
        "VIBE_DISCORD_APPLICATION_ID": DISCORD_APPLICATION,
    }
