"""The sender: delivers `Notification` rows to Slack and Discord, never twice, never losing one.

The lifecycle writes a row per event and channel in the same transaction as the task's change;
this module is the only reader. For each configured channel it takes due `pending` rows one at a
time with a compare-and-swap on (`state`, `attempts`): the winner bumps `attempts` (the fencing
token) and pushes `next_attempt_at` out by a lease, so a second sender skips the row, and a sender
that crashed mid-send lets the row come due again once the lease runs out. Success and failure are
written with the same compare-and-swap, so a late sender can never overwrite a newer outcome.

Failures: timeouts, refused connections, HTTP 5xx and 429 (honouring Retry-After) keep the row
pending with exponential backoff and jitter, forever; a chat outage only delays messages. Refusals
such as `invalid_auth` or `channel_not_found` are retried a few times (someone may be fixing the
token) and then marked `failed` with the error kept for the admin. After a transient or
channel-wide error the channel rests until the backoff ends instead of hammering the service.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from . import discord_api, messages
from .models import DeliveryState, Notification, Platform

logger = logging.getLogger(__name__)

BATCH_SIZE = 20
ERROR_TEXT_LIMIT = 2000

# Slack answers these with HTTP 200 and ok=false, yet they pass: try again later.
SLACK_TRANSIENT_ERRORS = {
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}
# Refusals that concern the whole channel or token, with what a person should check.
SLACK_CHANNEL_ERRORS = {
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


class DeliveryError(Exception):
    """A send that did not get through. `transient`: worth retrying without limit."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        retry_after: float | None = None,
        channel_wide: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.channel_wide = channel_wide or transient


@dataclass
class Channel:
    """One chat service: whether it is configured, and how to send one notification there."""

    name: str
    configured: bool
    missing: list[str]
    target: str
    send: Callable[[Notification], str] | None = None


@dataclass
class PassStats:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0  # taken by another sender first
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.retrying + self.failed

    def add(self, other: PassStats) -> None:
        self.sent += other.sent
        self.retrying += other.retrying
        self.failed += other.failed
        self.skipped += other.skipped
        self.errors += other.errors


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


def _slack_error(exc: SlackApiError) -> DeliveryError:
    response = exc.response
    status = getattr(response, "status_code", None) or 0
    data = getattr(response, "data", None)
    code = str(data.get("error") or "") if isinstance(data, dict) else ""
    if status == 429 or code in ("ratelimited", "rate_limited"):
        wait = _seconds(_header(getattr(response, "headers", None), "Retry-After"))
        return DeliveryError(
            f"Slack is rate limiting (HTTP {status}); retrying after "
            f"{'its Retry-After of ' + format(wait, 'g') + 's' if wait is not None else 'backoff'}",
            transient=True,
            retry_after=wait,
        )
    if status >= 500 or code in SLACK_TRANSIENT_ERRORS:
        return DeliveryError(
            f"Slack answered HTTP {status}{f' ({code})' if code else ''}; will retry",
            transient=True,
        )
    hint = SLACK_CHANNEL_ERRORS.get(code)
    text = f"Slack refused chat.postMessage: {code or f'HTTP {status}'}"
    return DeliveryError(
        f"{text}; {hint}" if hint else text, transient=False, channel_wide=hint is not None
    )


class Sender:
    """Delivers due notifications. `clock` and `rng` are injectable so tests can move time."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = timezone.now,
        rng: Callable[[], float] = random.random,
        batch_size: int = BATCH_SIZE,
        timeout: float | None = None,
        retry_base: float | None = None,
        retry_max: float | None = None,
        permanent_tries: int | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.batch_size = batch_size
        self.timeout = timeout or settings.VIBE_NOTIFY_TIMEOUT_SECONDS
        self.retry_base = (
            settings.VIBE_NOTIFY_RETRY_BASE_SECONDS if retry_base is None else retry_base
        )
        self.retry_max = settings.VIBE_NOTIFY_RETRY_MAX_SECONDS if retry_max is None else retry_max
        self.permanent_tries = permanent_tries or settings.VIBE_NOTIFY_PERMANENT_TRIES
        # Longer than any send can take (the HTTP timeout), so a live sender never loses a row.
        self.lease = timedelta(seconds=2 * self.timeout + 30)
        self.channels = self._channels()
        self.resting_until: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._slack: WebClient | None = None

    # --- Configuration ----------------------------------------------------------------------

    def _channels(self) -> list[Channel]:
        slack_missing = [
            name
            for name, value in (
                ("VIBE_SLACK_BOT_TOKEN", settings.VIBE_SLACK_BOT_TOKEN),
                ("VIBE_SLACK_CHANNEL", settings.VIBE_SLACK_CHANNEL),
            )
            if not value
        ]
        discord_missing = [
            name
            for name, value in (
                ("VIBE_DISCORD_BOT_TOKEN", settings.VIBE_DISCORD_BOT_TOKEN),
                ("VIBE_DISCORD_CHANNEL_ID", settings.VIBE_DISCORD_CHANNEL_ID),
            )
            if not value
        ]
        return [
            Channel(
                Platform.SLACK,
                not slack_missing,
                slack_missing,
                settings.VIBE_SLACK_CHANNEL,
                self._send_slack,
            ),
            Channel(
                Platform.DISCORD,
                not discord_missing,
                discord_missing,
                settings.VIBE_DISCORD_CHANNEL_ID,
                self._send_discord,
            ),
        ]

    def describe(self) -> list[str]:
        """One line per channel for the start-up log: where it sends, or why it keeps rows."""
        lines = []
        for channel in self.channels:
            label = Platform(channel.name).label
            if channel.configured:
                lines.append(f"{label}: sending notifications to {channel.target}")
            else:
                waiting = Notification.objects.filter(
                    channel=channel.name, state=DeliveryState.PENDING
                ).count()
                lines.append(
                    f"{label}: not configured (set {' and '.join(channel.missing)}); "
                    f"its notifications are kept, not sent ({waiting} waiting)"
                )
        return lines

    # --- Sending one message ----------------------------------------------------------------

    def _slack_client(self) -> WebClient:
        if self._slack is None:
            # No retry handlers: this module's backoff is the one retry policy, and a request
            # retried inside the client could post the message twice.
            self._slack = WebClient(
                token=settings.VIBE_SLACK_BOT_TOKEN,
                base_url=settings.VIBE_SLACK_API_URL,
                timeout=self.timeout,
                retry_handlers=[],
            )
        return self._slack

    def _send_slack(self, notification: Notification) -> str:
        body = messages.slack_message(notification)
        try:
            response = self._slack_client().chat_postMessage(
                channel=settings.VIBE_SLACK_CHANNEL, **body
            )
        except SlackApiError as exc:
            raise _slack_error(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DeliveryError(f"could not reach Slack ({reason})", transient=True) from None
        return str(response.get("ts") or "")

    def _send_discord(self, notification: Notification) -> str:
        body = messages.discord_message(notification)
        try:
            answer = discord_api.post_message(
                settings.VIBE_DISCORD_CHANNEL_ID, body, timeout=self.timeout
            )
        except discord_api.DiscordError as exc:
            raise DeliveryError(
                str(exc),
                transient=exc.transient,
                retry_after=exc.retry_after,
                channel_wide=exc.status in (401, 403, 404),
            ) from None
        return str(answer.get("id") or "")

    # --- The compare-and-swap steps ---------------------------------------------------------

    def due(self, channel: str, now: datetime) -> QuerySet[Notification]:
        return (
            Notification.objects.filter(channel=channel, state=DeliveryState.PENDING)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .select_related("task")
            .order_by("created_at", "id")
        )

    def _claim(self, row: Notification, now: datetime) -> int | None:
        """Take the row for one send; returns the fencing token, or None if another sender won."""
        token = row.attempts + 1
        taken = (
            Notification.objects.filter(
                pk=row.pk, state=DeliveryState.PENDING, attempts=row.attempts
            )
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .update(attempts=F("attempts") + 1, next_attempt_at=now + self.lease)
        )
        return token if taken == 1 else None

    def _finish(self, row: Notification, token: int, **fields) -> bool:
        done = Notification.objects.filter(
            pk=row.pk, state=DeliveryState.PENDING, attempts=token
        ).update(**fields)
        if not done:
            logger.warning(
                "notification %s: another sender took it over while this one was sending "
                "(the send outlived its lease); its outcome was not recorded",
                row.pk,
            )
        return bool(done)

    def backoff(self, attempts: int) -> timedelta:
        """Exponential, capped, with jitter so rows that failed together don't retry together."""
        # The exponent is capped: a row retried hourly for weeks must not overflow a float.
        base = min(self.retry_max, self.retry_base * (2 ** min(max(attempts - 1, 0), 30)))
        return timedelta(seconds=base * (0.5 + 0.5 * self.rng()))

    def _record_failure(
        self, row: Notification, token: int, error: DeliveryError, now: datetime
    ) -> tuple[str, timedelta | None]:
        text = str(error)[:ERROR_TEXT_LIMIT]
        if not error.transient and token >= self.permanent_tries:
            self._finish(
                row, token, state=DeliveryState.FAILED, next_attempt_at=None, last_error=text
            )
            logger.error(
                "notification %s (%s %s) to %s failed for good after %s tries: %s",
                row.pk,
                row.event,
                row.subject,
                row.channel,
                token,
                text,
            )
            return DeliveryState.FAILED, None
        if error.retry_after is not None:
            delay = timedelta(seconds=max(1.0, error.retry_after) * (1 + 0.1 * self.rng()))
        else:
            delay = self.backoff(token)
        self._finish(row, token, next_attempt_at=now + delay, last_error=text)
        logger.warning(
            "notification %s (%s %s) to %s: attempt %s failed, next try in %.0fs: %s",
            row.pk,
            row.event,
            row.subject,
            row.channel,
            token,
            delay.total_seconds(),
            text,
        )
        return DeliveryState.PENDING, delay

    def deliver(self, row: Notification, channel: Channel) -> tuple[str, DeliveryError | None]:
        """Claim, send and record one row. Returns (outcome, error); outcome "skipped" if lost."""
        now = self.clock()
        token = self._claim(row, now)
        if token is None:
            return "skipped", None
        row.attempts = token
        try:
            external_id = channel.send(row)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:
            # A bug (say, in building the message) must not crash-loop the sender: the row is
            # moved aside like a refused one, with the error kept, and the others go on.
            logger.exception("notification %s: unexpected error while sending", row.pk)
            error = DeliveryError(f"internal error while sending: {exc!r}", transient=False)
        else:
            self._finish(
                row,
                token,
                state=DeliveryState.SENT,
                external_id=external_id[:100],
                sent_at=self.clock(),
                next_attempt_at=None,
                last_error="",
            )
            logger.info(
                "notification %s (%s %s) sent to %s as %s",
                row.pk,
                row.event,
                row.subject,
                row.channel,
                external_id or "?",
            )
            return DeliveryState.SENT, None
        state, delay = self._record_failure(row, token, error, self.clock())
        if error.channel_wide:
            rest = delay or self.backoff(token)
            self.resting_until[channel.name] = self.clock() + rest
        return state, error

    # --- Passes and the loop ----------------------------------------------------------------

    def send_due(self) -> PassStats:
        """One pass over every configured channel; returns what happened."""
        stats = PassStats()
        for channel in self.channels:
            if not channel.configured or self._stop.is_set():
                continue
            rest = self.resting_until.get(channel.name)
            if rest and rest > self.clock():
                continue
            stats.add(self._send_channel(channel))
        return stats

    def _send_channel(self, channel: Channel) -> PassStats:
        stats = PassStats()
        for row in list(self.due(channel.name, self.clock())[: self.batch_size]):
            if self._stop.is_set():
                break
            outcome, error = self.deliver(row, channel)
            if outcome == DeliveryState.SENT:
                stats.sent += 1
            elif outcome == "skipped":
                stats.skipped += 1
            elif outcome == DeliveryState.FAILED:
                stats.failed += 1
            else:
                stats.retrying += 1
            if error is not None:
                stats.errors.append(f"{channel.name}: {error}")
                if error.channel_wide:
                    break  # the service is down or refuses us: rest instead of trying the rest
        return stats

    def run(self, *, interval: float = 5.0, once: bool = False) -> PassStats:
        """Drain while there is work, then sleep `interval`; with `once`, drain and return."""
        total = PassStats()
        while not self._stop.is_set():
            try:
                stats = self.send_due()
            except DatabaseError:
                if once:
                    raise
                # The database restarted or a connection broke: keep the process, try again.
                logger.exception("database error in the sender; trying again in %gs", interval)
                self._stop.wait(interval)
                close_old_connections()
                continue
            total.add(stats)
            if stats.handled or stats.skipped:
                continue
            if once:
                break
            self._stop.wait(interval)
            # After a sleep the connection may have been dropped by the server or outlived
            # CONN_MAX_AGE; let Django replace it rather than fail the next query.
            close_old_connections()
        return total

    def stop(self) -> None:
        """Ask the loop to exit after the send in flight (safe from a signal handler)."""
        self._stop.set()


def resend_failed(ids) -> int:
    """Give `failed` rows (by id) fresh tries, e.g. after fixing a token; returns how many."""
    return Notification.objects.filter(pk__in=list(ids), state=DeliveryState.FAILED).update(
        state=DeliveryState.PENDING, attempts=0, next_attempt_at=None
    )
