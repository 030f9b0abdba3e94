"""A tiny Discord REST client: post and edit channel messages (the outbox's `DiscordTransport`),
register the `/vibe` command.

Plain `urllib.request` with the bot token, the base URL from settings (so tests point it at a
stand-in on 127.0.0.1) and a timeout on every call. Every failure becomes a `DiscordError` whose
message is written for a person and which says whether trying again later can help.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings

from tasks_app.choices import Lane, Risk

from ..models import ChatThread, Notification, Platform
from ..transport import DeliveryError, MessageGone, missing_settings
from . import render

logger = logging.getLogger(__name__)

# Discord asks bots to say who they are in this form: "DiscordBot (url-or-name, version)".
USER_AGENT = "DiscordBot (vibe-factory, 0.1.0)"

# Option types of Discord's application commands.
SUB_COMMAND, STRING, INTEGER = 1, 3, 4


def _task_id_option(what: str) -> dict:
    return {
        "type": INTEGER,
        "name": "id",
        "description": f"The id of the task to {what}",
        "required": True,
        "min_value": 1,
    }


def _more_ids_option() -> dict:
    return {
        "type": STRING,
        "name": "more",
        "description": "More task ids, separated by spaces",
        "required": False,
        "max_length": 400,
    }


def _text_option(name: str, description: str, *, required: bool, limit: int) -> dict:
    return {
        "type": STRING,
        "name": name,
        "description": description,
        "required": required,
        "max_length": limit,
    }


def _choices(values: list[str]) -> list[dict]:
    return [{"name": value, "value": value} for value in values]


def _submit_options() -> list[dict]:
    """lane, then the qualifiers, then the goal: the order the grammar reads them in."""
    return [
        {
            "type": STRING,
            "name": "lane",
            "description": "The lane that does the work",
            "required": True,
            "choices": _choices(list(Lane.values)),
        },
        _text_option("goal", "What the task should achieve", required=True, limit=4000),
        _text_option(
            "key",
            "An idempotency key: the same key again is the same task",
            required=False,
            limit=200,
        ),
        {
            "type": STRING,
            "name": "risk",
            "description": "High risk waits for an Approver",
            "required": False,
            "choices": _choices(list(Risk.values)),
        },
        {
            "type": INTEGER,
            "name": "priority",
            "description": "0–100, higher first (default 50)",
            "required": False,
            "min_value": 0,
            "max_value": 100,
        },
    ]


# `/vibe <subcommand> [id]` — the same grammar as Slack and the CLI (chatops_app/grammar.py).
# The Discord door turns `/vibe retry id:42` back into the text "retry 42" (discord/views.py).
VIBE_COMMAND: dict = {
    "name": "vibe",
    "type": 1,
    "description": "Steer the Vibe Factory: submit, retry, approve, cancel, dead letters, workers",
    "options": [
        {"type": SUB_COMMAND, "name": "status", "description": "Workers by lane, tasks by status"},
        {
            "type": SUB_COMMAND,
            "name": "submit",
            "description": "New work for a lane",
            "options": _submit_options(),
        },
        {
            "type": SUB_COMMAND,
            "name": "retry",
            "description": "Send dead-letter or blocked tasks back to pending",
            "options": [_task_id_option("retry"), _more_ids_option()],
        },
        {
            "type": SUB_COMMAND,
            "name": "approve",
            "description": "Approve high-risk tasks",
            "options": [_task_id_option("approve"), _more_ids_option()],
        },
        {
            "type": SUB_COMMAND,
            "name": "cancel",
            "description": "Stop open tasks for good",
            "options": [_task_id_option("cancel"), _more_ids_option()],
        },
        {
            "type": SUB_COMMAND,
            "name": "merge",
            "description": "Merge a task's reviewed branch into its base",
            "options": [_task_id_option("merge")],
        },
        {
            "type": SUB_COMMAND,
            "name": "rework",
            "description": "Ask for changes: a rework round on the same branch",
            "options": [
                _task_id_option("rework"),
                _text_option("comment", "What should change", required=True, limit=2000),
            ],
        },
        {
            "type": SUB_COMMAND,
            "name": "rebase",
            "description": "Rework a conflicting branch onto its base",
            "options": [
                _task_id_option("rebase"),
                _text_option("comment", "Anything to add", required=False, limit=2000),
            ],
        },
        {"type": SUB_COMMAND, "name": "dlq", "description": "The dead-letter queue, newest first"},
        {
            "type": SUB_COMMAND,
            "name": "worker",
            "description": "One worker: lane, load, heartbeat, current tasks",
            "options": [
                {
                    "type": STRING,
                    "name": "id",
                    "description": "The worker id, such as @backend-1",
                    "required": True,
                    "max_length": 64,
                }
            ],
        },
        {
            "type": SUB_COMMAND,
            "name": "task",
            "description": "One task with its history",
            "options": [_task_id_option("show")],
        },
        {"type": SUB_COMMAND, "name": "help", "description": "What /vibe can do"},
    ],
}


class DiscordError(Exception):
    """A Discord call that did not succeed; `transient` is True when a later try may work."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


class DiscordNotConfigured(DiscordError):
    pass


def _retry_after(headers, body: dict) -> float | None:
    """Seconds to wait from a 429: the JSON `retry_after` (precise) or the Retry-After header."""
    for raw in (body.get("retry_after"), headers.get("Retry-After") if headers else None):
        if raw is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return value
    return None


def _error_from_http(exc: urllib.error.HTTPError, what: str) -> DiscordError:
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    try:
        body = json.loads(raw.decode("utf-8", errors="replace")) if raw else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("message") or exc.reason or "").strip()
    code = body.get("code")
    text = f"{what}: Discord answered HTTP {exc.code}"
    if detail:
        text += f" ({detail}{f', code {code}' if code else ''})"
    if exc.code == 429:
        wait = _retry_after(exc.headers, body)
        return DiscordError(text, status=429, transient=True, retry_after=wait)
    if exc.code >= 500:
        return DiscordError(text, status=exc.code, transient=True)
    if exc.code == 401:
        text += "; check VIBE_DISCORD_BOT_TOKEN"
    elif exc.code in (403, 404):
        text += "; check VIBE_DISCORD_CHANNEL_ID and that the bot was added with access to it"
    return DiscordError(text, status=exc.code, transient=False)


def request(
    method: str,
    path: str,
    payload: Any = None,
    *,
    token: str | None = None,
    timeout: float | None = None,
    what: str = "Discord request",
) -> Any:
    """One REST call; returns the decoded JSON answer or raises DiscordError."""
    token = token if token is not None else settings.VIBE_DISCORD_BOT_TOKEN
    url = settings.VIBE_DISCORD_API_URL.rstrip("/") + "/" + path.lstrip("/")
    data = json.dumps(payload).encode("utf-8") if payload is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bot {token}")
    req.add_header("User-Agent", USER_AGENT)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    timeout = timeout or settings.VIBE_NOTIFY_TIMEOUT_SECONDS
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http(s) only)
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise _error_from_http(exc, what) from None
    except (OSError, http.client.HTTPException) as exc:
        # Timeouts, refused connections, resets: the service or the network is down for now.
        reason = getattr(exc, "reason", None) or exc
        raise DiscordError(f"{what}: could not reach Discord ({reason})", transient=True) from None
    try:
        return json.loads(raw.decode("utf-8", errors="replace")) if raw else None
    except ValueError:
        logger.warning("%s: Discord answered 2xx with a body that is not JSON", what)
        return None


def post_message(channel_id: str, body: dict, *, timeout: float | None = None) -> dict:
    """Post a message to a channel; returns Discord's message object (with its `id`)."""
    if not settings.VIBE_DISCORD_BOT_TOKEN or not channel_id:
        raise DiscordNotConfigured(
            "Discord is not configured: set VIBE_DISCORD_BOT_TOKEN and VIBE_DISCORD_CHANNEL_ID"
        )
    answer = request(
        "POST",
        f"/channels/{channel_id}/messages",
        body,
        timeout=timeout,
        what=f"posting to Discord channel {channel_id}",
    )
    # A 2xx means the message is posted: never treat an odd answer as a failure to retry.
    return answer if isinstance(answer, dict) else {}


def edit_message(
    channel_id: str, message_id: str, body: dict, *, timeout: float | None = None
) -> dict:
    """Edit one of the bot's messages in place (a task's message as the task moves)."""
    answer = request(
        "PATCH",
        f"/channels/{channel_id}/messages/{message_id}",
        body,
        timeout=timeout,
        what=f"editing Discord message {message_id}",
    )
    return answer if isinstance(answer, dict) else {}


def register_commands(*, timeout: float | None = None) -> list[dict]:
    """Register (overwrite) the global `/vibe` command; returns what Discord stored."""
    app_id = settings.VIBE_DISCORD_APPLICATION_ID
    missing = [
        name
        for name, value in (
            ("VIBE_DISCORD_APPLICATION_ID", app_id),
            ("VIBE_DISCORD_BOT_TOKEN", settings.VIBE_DISCORD_BOT_TOKEN),
        )
        if not value
    ]
    if missing:
        raise DiscordNotConfigured(
            f"cannot register /vibe with Discord: set {' and '.join(missing)} "
            "(both are on your application's page in the Discord developer portal)"
        )
    if not app_id.isdigit():
        raise DiscordNotConfigured(
            f"VIBE_DISCORD_APPLICATION_ID={app_id!r} is not a Discord application id "
            "(a number such as 1234567890123456789)"
        )
    answer = request(
        "PUT",
        f"/applications/{app_id}/commands",
        [VIBE_COMMAND],
        timeout=timeout,
        what="registering /vibe with Discord",
    )
    logger.info("registered /vibe with Discord application %s", app_id)
    return answer if isinstance(answer, list) else []


def _delivery_error(exc: DiscordError) -> DeliveryError:
    return DeliveryError(
        str(exc),
        transient=exc.transient,
        retry_after=exc.retry_after,
        channel_wide=exc.status in (401, 403, 404),
    )


class DiscordTransport:
    """Posts and edits the factory's messages in `VIBE_DISCORD_CHANNEL_ID` with the bot token."""

    name = Platform.DISCORD

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self.target = settings.VIBE_DISCORD_CHANNEL_ID
        self.missing = missing_settings("VIBE_DISCORD_BOT_TOKEN", "VIBE_DISCORD_CHANNEL_ID")

    def render(self, notification: Notification) -> dict:
        return render.notification_message(notification)

    def post(self, body: dict, thread: ChatThread | None) -> tuple[str, str]:
        if thread is None:
            target, sent = self.target, body
        else:
            target = thread.chat_channel
            sent = render.reply_body(body, target, thread.external_id)
        try:
            answer = post_message(target, sent, timeout=self.timeout)
        except DiscordError as exc:
            raise _delivery_error(exc) from None
        return str(answer.get("id") or ""), str(answer.get("channel_id") or target)

    def update(self, thread: ChatThread, body: dict) -> None:
        try:
            edit_message(
                thread.chat_channel,
                thread.external_id,
                render.edit_body(body),
                timeout=self.timeout,
            )
        except DiscordError as exc:
            if exc.status == 404:
                raise MessageGone(str(exc)) from None
            raise _delivery_error(exc) from None
