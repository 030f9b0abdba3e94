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

One message per task and channel (`ChatThread`): the first notification about a task posts it;
later ones edit it to show where the task is now and post their own news as a reply in its
thread (Slack `thread_ts`, a Discord reply). Edits are idempotent, so a retried send edits again
and replies once more only when the reply itself had not got through. Between notifications,
each pass also redraws the messages of tasks that moved (status, reviews, pull request,
delivery), editing only when what the message shows changed.
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
from django.db import DatabaseError, IntegrityError, close_old_connections, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tasks_app.choices import OPEN_STATUSES

from . import discord_api, messages
from .models import ChatThread, DeliveryState, Notification, Platform

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


# Slack's answers to chat.update when the task's message is no longer there to edit.
SLACK_GONE_ERRORS = {"message_not_found", "cant_update_message", "edit_window_closed"}
# How long news waits while another sender posts its task's first message.
THREAD_WAIT_SECONDS = 5.0


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


class ThreadBusy(DeliveryError):
    """Another sender is posting the task's first message; this news goes in its thread after."""

    def __init__(self, task_id: int) -> None:
        super().__init__(
            f"task #{task_id}'s message is being posted by another sender; this news follows "
            "in its thread",
            transient=True,
            retry_after=THREAD_WAIT_SECONDS,
        )
        self.channel_wide = False  # one task waits, not the channel


class MessageGone(DeliveryError):
    """The task's message was deleted (or can no longer be edited): start a new one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)
        self.channel_wide = False


@dataclass
class Channel:
    """One chat service: whether it is configured, and how to send one notification there."""

    name: str
    configured: bool
    missing: list[str]
    target: str
    send: Callable[[Notification], str] | None = None
    # Redraw a task's message from a notification (the task as it is now).
    edit: Callable[[ChatThread, Notification], None] | None = None


@dataclass
class PassStats:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0  # taken by another sender first
    updated: int = 0  # tasks' messages redrawn because the task moved
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.retrying + self.failed

    def add(self, other: PassStats) -> None:
        self.sent += other.sent
        self.retrying += other.retrying
        self.failed += other.failed
        self.skipped += other.skipped
        self.updated += other.updated
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
                self._edit_slack,
            ),
            Channel(
                Platform.DISCORD,
                not discord_missing,
                discord_missing,
                settings.VIBE_DISCORD_CHANNEL_ID,
                self._send_discord,
                self._edit_discord,
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

    def _slack_call(self, method: str, **arguments) -> dict:
        try:
            response = getattr(self._slack_client(), method)(**arguments)
        except SlackApiError as exc:
            data = getattr(exc.response, "data", None)
            code = str(data.get("error") or "") if isinstance(data, dict) else ""
            if method == "chat_update" and code in SLACK_GONE_ERRORS:
                raise MessageGone(f"Slack refused chat.update: {code}") from None
            raise _slack_error(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DeliveryError(f"could not reach Slack ({reason})", transient=True) from None
        return response.data if isinstance(response.data, dict) else {}

    def _send_slack(self, notification: Notification) -> str:
        body = messages.slack_message(notification)
        if notification.task_id is None:  # a factory event: a message of its own
            answer = self._slack_call(
                "chat_postMessage", channel=settings.VIBE_SLACK_CHANNEL, **body
            )
            return str(answer.get("ts") or "")

        def post(thread: ChatThread | None) -> tuple[str, str]:
            if thread is None:
                target, sent = settings.VIBE_SLACK_CHANNEL, body
            else:
                target, sent = thread.chat_channel, messages.slack_reply(body, thread.external_id)
            answer = self._slack_call("chat_postMessage", channel=target, **sent)
            return str(answer.get("ts") or ""), str(answer.get("channel") or target)

        return self._send_threaded(notification, post, body)

    def _edit_slack(self, thread: ChatThread, notification: Notification) -> None:
        body = messages.slack_edit(messages.slack_message(notification))
        self._slack_call("chat_update", channel=thread.chat_channel, ts=thread.external_id, **body)

    @staticmethod
    def _discord_error(exc: discord_api.DiscordError) -> DeliveryError:
        return DeliveryError(
            str(exc),
            transient=exc.transient,
            retry_after=exc.retry_after,
            channel_wide=exc.status in (401, 403, 404),
        )

    def _send_discord(self, notification: Notification) -> str:
        body = messages.discord_message(notification)

        def post(thread: ChatThread | None) -> tuple[str, str]:
            if thread is None:
                target, sent = settings.VIBE_DISCORD_CHANNEL_ID, body
            else:
                target = thread.chat_channel
                sent = messages.discord_reply(body, target, thread.external_id)
            try:
                answer = discord_api.post_message(target, sent, timeout=self.timeout)
            except discord_api.DiscordError as exc:
                raise self._discord_error(exc) from None
            return str(answer.get("id") or ""), str(answer.get("channel_id") or target)

        if notification.task_id is None:
            return post(None)[0]
        return self._send_threaded(notification, post, body)

    def _edit_discord(self, thread: ChatThread, notification: Notification) -> None:
        body = messages.discord_edit(messages.discord_message(notification))
        try:
            discord_api.edit_message(
                thread.chat_channel, thread.external_id, body, timeout=self.timeout
            )
        except discord_api.DiscordError as exc:
            if exc.status == 404:
                raise MessageGone(str(exc)) from None
            raise self._discord_error(exc) from None

    # --- A task's one message and its thread ------------------------------------------------

    def _thread_for(self, row: Notification) -> tuple[ChatThread, bool]:
        """The task's thread on this row's channel, and whether this send posts its first
        message (then this sender holds the thread's lease). Raises ThreadBusy while another
        sender posts it."""
        now = self.clock()
        where = {"task_id": row.task_id, "channel": row.channel}
        thread = ChatThread.objects.filter(**where).first()
        if thread is None:
            try:
                with transaction.atomic():
                    return ChatThread.objects.create(**where, posting_until=now + self.lease), True
            except IntegrityError:  # another sender started it a moment ago
                thread = ChatThread.objects.get(**where)
        if thread.external_id:
            return thread, False
        taken = (
            ChatThread.objects.filter(pk=thread.pk, external_id="")
            .filter(Q(posting_until__isnull=True) | Q(posting_until__lte=now))
            .update(posting_until=now + self.lease)
        )
        if taken != 1:
            raise ThreadBusy(row.task_id)
        return thread, True

    def _send_threaded(
        self, row: Notification, post: Callable[[ChatThread | None], tuple[str, str]], body: dict
    ) -> str:
        """Post the task's first message, or redraw it and post this news in its thread."""
        channel = next(c for c in self.channels if c.name == row.channel)
        thread, first = self._thread_for(row)
        if not first:
            # The message shows the newest news; a late older one only goes in the thread.
            shown = thread.notification if (thread.notification_id or 0) > row.pk else row
            shown.task = row.task
            try:
                channel.edit(thread, shown)
            except MessageGone as exc:
                logger.warning(
                    "task #%s's message is gone (%s); posting a new one", row.task_id, exc
                )
                first = True
        if first:
            try:
                message_id, chat_channel = post(None)
            except DeliveryError:
                # Not posted: let the next send about this task (this row's retry or another)
                # post it, instead of waiting out this sender's lease.
                ChatThread.objects.filter(pk=thread.pk, external_id="").update(posting_until=None)
                raise
            self._drawn(thread, row, body, external_id=message_id, chat_channel=chat_channel)
            return message_id
        message_id, _ = post(thread)
        drawn = (
            messages.slack_message if row.channel == Platform.SLACK else messages.discord_message
        )
        self._drawn(thread, shown, drawn(shown))
        return message_id

    def _drawn(self, thread: ChatThread, shown: Notification, body: dict, **posted) -> None:
        """Record what the task's message shows now (and, for a first message, where it is)."""
        task = shown.task
        fields = {
            "notification": shown,
            "shown": messages.digest(body),
            "synced_at": task.updated_at,
            "open": task.status in OPEN_STATUSES,
        }
        if posted:
            fields.update(posted, external_id=posted["external_id"][:100], posting_until=None)
        ChatThread.objects.filter(pk=thread.pk).update(**fields)

    def refresh_threads(self, channel: Channel) -> PassStats:
        """Redraw the messages of tasks that moved since they were drawn (at most a batch)."""
        stats = PassStats()
        render = (
            messages.slack_message if channel.name == Platform.SLACK else messages.discord_message
        )
        moved = (
            ChatThread.objects.filter(channel=channel.name, open=True)
            .exclude(external_id="")
            .exclude(synced_at=F("task__updated_at"))
            .select_related("task", "notification")
            .order_by("pk")[: self.batch_size]
        )
        for thread in moved:
            if self._stop.is_set():
                break
            task, shown = thread.task, thread.notification
            fields = {"synced_at": task.updated_at, "open": task.status in OPEN_STATUSES}
            if shown is not None:
                shown.task = task
                body = render(shown)
                fields["shown"] = messages.digest(body)
                if fields["shown"] != thread.shown:
                    try:
                        channel.edit(thread, shown)
                    except MessageGone as exc:
                        logger.warning("task #%s's message is gone (%s)", task.pk, exc)
                        fields["open"] = False  # the next news about it starts a new one
                    except DeliveryError as exc:
                        stats.errors.append(f"{channel.name}: {exc}")
                        if exc.channel_wide:
                            self.resting_until[channel.name] = self.clock() + self.backoff(1)
                            break
                        logger.warning("could not redraw task #%s's message: %s", task.pk, exc)
                        continue  # tried again on the next pass
                    else:
                        stats.updated += 1
            # Compare-and-swap: a sender that drew it meanwhile keeps its (newer) record.
            ChatThread.objects.filter(pk=thread.pk, synced_at=thread.synced_at).update(**fields)
        return stats

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
            rest = self.resting_until.get(channel.name)
            if not self._stop.is_set() and not (rest and rest > self.clock()):
                stats.add(self.refresh_threads(channel))
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
            if stats.handled or stats.skipped or stats.updated:
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
