"""Slack's side of the outbox: `chat.postMessage` and `chat.update` through slack-sdk's WebClient,
with Slack's answers sorted into worth-retrying and refused (with what a person should check)."""

from __future__ import annotations

import http.client
import logging

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from ..models import ChatThread, Notification, Platform
from ..transport import DeliveryError, MessageGone, missing_settings
from . import render

logger = logging.getLogger(__name__)

RESPONSE_URL_TIMEOUT_SECONDS = 5

# Slack answers these with HTTP 200 and ok=false, yet they pass: try again later.
TRANSIENT_ERRORS = {
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}
# Refusals that concern the whole channel or token, with what a person should check.
CHANNEL_ERRORS = {
    "invalid_auth": "check VIBE_SLACK_BOT_TOKEN (the app's Bot User OAuth Token, xoxb-…)",
    "not_authed": "set VIBE_SLACK_BOT_TOKEN",
    "token_revoked": "the bot token was revoked; reinstall the app and update VIBE_SLACK_BOT_TOKEN",
    "token_expired": "the bot token expired; update VIBE_SLACK_BOT_TOKEN",
    "account_inactive": "the bot's account is inactive; reinstall the app",
    "missing_scope": "the app lacks the chat:write scope; add it and reinstall",
    "channel_not_found": "check VIBE_SLACK_CHANNEL (a channel id such as C0123456789)",
    "not_in_channel": "invite the bot to VIBE_SLACK_CHANNEL (/invite @your-bot)",
    "is_archived": "VIBE_SLACK_CHANNEL is archived; choose another channel",
    "restricted_action": "the workspace does not let the bot post in VIBE_SLACK_CHANNEL",
}
# Slack's answers to chat.update when the task's message is no longer there to edit.
GONE_ERRORS = {"message_not_found", "cant_update_message", "edit_window_closed"}


def _header(headers, name: str) -> str | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return value[0] if isinstance(value, list | tuple) else value
    return None


def _seconds(raw) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _error_code(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def delivery_error(exc: SlackApiError) -> DeliveryError:
    """A refused Slack call as the outbox's error: transient, channel-wide, or this row's."""
    response = exc.response
    status = getattr(response, "status_code", None) or 0
    code = _error_code(exc)
    if status == 429 or code in ("ratelimited", "rate_limited"):
        wait = _seconds(_header(getattr(response, "headers", None), "Retry-After"))
        return DeliveryError(
            f"Slack is rate limiting (HTTP {status}); retrying after "
            f"{'its Retry-After of ' + format(wait, 'g') + 's' if wait is not None else 'backoff'}",
            transient=True,
            retry_after=wait,
        )
    if status >= 500 or code in TRANSIENT_ERRORS:
        return DeliveryError(
            f"Slack answered HTTP {status}{f' ({code})' if code else ''}; will retry",
            transient=True,
        )
    hint = CHANNEL_ERRORS.get(code)
    text = f"Slack refused chat.postMessage: {code or f'HTTP {status}'}"
    return DeliveryError(
        f"{text}; {hint}" if hint else text, transient=False, channel_wide=hint is not None
    )


class SlackTransport:
    """Posts and edits the factory's messages in `VIBE_SLACK_CHANNEL` with the bot token."""

    name = Platform.SLACK

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self.target = settings.VIBE_SLACK_CHANNEL
        self.missing = missing_settings("VIBE_SLACK_BOT_TOKEN", "VIBE_SLACK_CHANNEL")
        self._client: WebClient | None = None

    def render(self, notification: Notification) -> dict:
        return render.notification_message(notification)

    def _web(self) -> WebClient:
        if self._client is None:
            # No retry handlers: the outbox's backoff is the one retry policy, and a request
            # retried inside the client could post the message twice.
            self._client = WebClient(
                token=settings.VIBE_SLACK_BOT_TOKEN,
                base_url=settings.VIBE_SLACK_API_URL,
                timeout=self.timeout,  # type: ignore[arg-type]  # slack_sdk says int; a float works
                retry_handlers=[],
            )
        return self._client

    def _call(self, method: str, **arguments) -> dict:
        try:
            response = getattr(self._web(), method)(**arguments)
        except SlackApiError as exc:
            code = _error_code(exc)
            if method == "chat_update" and code in GONE_ERRORS:
                raise MessageGone(f"Slack refused chat.update: {code}") from None
            raise delivery_error(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DeliveryError(f"could not reach Slack ({reason})", transient=True) from None
        return response.data if isinstance(response.data, dict) else {}

    def post(self, body: dict, thread: ChatThread | None) -> tuple[str, str]:
        if thread is None:
            target, sent = self.target, body
        else:
            target, sent = thread.chat_channel, render.thread_reply(body, thread.external_id)
        answer = self._call("chat_postMessage", channel=target, **sent)
        return str(answer.get("ts") or ""), str(answer.get("channel") or target)

    def update(self, thread: ChatThread, body: dict) -> None:
        self._call(
            "chat_update",
            channel=thread.chat_channel,
            ts=thread.external_id,
            **render.edit_arguments(body),
        )


def _click_reply_error(message: str, *, transient: bool) -> DeliveryError:
    """One click's answer failed: only this row waits, never the whole channel."""
    error = DeliveryError(message, transient=transient)
    error.channel_wide = False
    return error


def post_to_response_url(url: str, message: dict) -> None:
    """Send `message` to a command's or click's response_url; raises DeliveryError.

    5xx, 429 and an unreachable Slack are worth retrying; anything else (an expired or used-up
    url answers 404) is not. No retry inside the client: the outbox's backoff is the policy.
    """
    try:
        response = WebhookClient(url, timeout=RESPONSE_URL_TIMEOUT_SECONDS).send_dict(message)
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _click_reply_error(
            f"could not reach Slack's response_url ({reason})", transient=True
        ) from None
    if response.status_code >= 300:
        raise _click_reply_error(
            f"Slack's response_url answered {response.status_code}: {str(response.body)[:200]}",
            transient=response.status_code >= 500 or response.status_code == 429,
        )
