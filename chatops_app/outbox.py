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

from tasks_app.choices import OPEN_STATUSES, NotificationEvent

from . import messages
from .discord.api import DiscordTransport
from .models import ChatThread, DeliveryState, Notification, Platform
from .slack.transport import SlackTransport, post_to_response_url
from .transport import DeliveryError, MessageGone, Transport

logger = logging.getLogger(__name__)

BATCH_SIZE = 20
ERROR_TEXT_LIMIT = 2000

# How long news waits while another sender posts its task's first message.
THREAD_WAIT_SECONDS = 5.0


class ThreadBusy(DeliveryError):
    """Another sender is posting the task's first message; this news goes in its thread after."""

    def __init__(self, task_id: int | None) -> None:
        super().__init__(
            f"task #{task_id}'s message is being posted by another sender; this news follows "
            "in its thread",
            transient=True,
            retry_after=THREAD_WAIT_SECONDS,
        )
        self.channel_wide = False  # one task waits, not the channel


@dataclass
class Channel:
    """One chat service the sender delivers to, and whether it is configured."""

    transport: Transport

    @property
    def name(self) -> str:
        return self.transport.name

    @property
    def configured(self) -> bool:
        return not self.transport.missing


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

    # --- Configuration ----------------------------------------------------------------------

    def _channels(self) -> list[Channel]:
        return [
            Channel(SlackTransport(timeout=self.timeout)),
            Channel(DiscordTransport(timeout=self.timeout)),
        ]

    def describe(self) -> list[str]:
        """One line per channel for the start-up log: where it sends, or why it keeps rows."""
        lines = []
        for channel in self.channels:
            label = Platform(channel.name).label
            if channel.configured:
                lines.append(f"{label}: sending notifications to {channel.transport.target}")
            else:
                # Click answers are sent anyway: each carries its own response_url.
                waiting = (
                    Notification.objects.filter(channel=channel.name, state=DeliveryState.PENDING)
                    .exclude(event=NotificationEvent.CLICK_REPLY)
                    .count()
                )
                lines.append(
                    f"{label}: not configured (set {' and '.join(channel.transport.missing)}); "
                    f"its notifications are kept, not sent ({waiting} waiting)"
                )
        return lines

    # --- Sending one message ----------------------------------------------------------------

    def _send(self, channel: Channel, row: Notification) -> str:
        """Answer a click, post a factory event's own message, or a task's news (in its thread)."""
        if row.event == NotificationEvent.CLICK_REPLY:
            post_to_response_url(row.data["response_url"], row.data["message"])
            return ""
        body = channel.transport.render(row)
        if row.task_id is None:  # a factory event: a message of its own
            return channel.transport.post(body, None)[0]
        return self._send_threaded(channel, row, body)

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

    def _send_threaded(self, channel: Channel, row: Notification, body: dict) -> str:
        """Post the task's first message, or redraw it and post this news in its thread."""
        transport = channel.transport
        thread, first = self._thread_for(row)
        if not first:
            # The message shows the newest news; a late older one only goes in the thread.
            newer = thread.notification if (thread.notification_id or 0) > row.pk else None
            shown = newer or row
            shown.task = row.task
            try:
                transport.update(thread, transport.render(shown))
            except MessageGone as exc:
                logger.warning(
                    "task #%s's message is gone (%s); posting a new one", row.task_id, exc
                )
                first = True
        if first:
            try:
                message_id, chat_channel = transport.post(body, None)
            except DeliveryError:
                # Not posted: let the next send about this task (this row's retry or another)
                # post it, instead of waiting out this sender's lease.
                ChatThread.objects.filter(pk=thread.pk, external_id="").update(posting_until=None)
                raise
            self._drawn(thread, row, body, external_id=message_id, chat_channel=chat_channel)
            return message_id
        message_id, _ = transport.post(body, thread)
        self._drawn(thread, shown, transport.render(shown))
        return message_id

    def _drawn(self, thread: ChatThread, shown: Notification, body: dict, **posted) -> None:
        """Record what the task's message shows now (and, for a first message, where it is)."""
        task = shown.task
        assert task is not None  # a thread is a task's
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
                body = channel.transport.render(shown)
                fields["shown"] = messages.digest(body)
                if fields["shown"] != thread.shown:
                    try:
                        channel.transport.update(thread, body)
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

    def due(
        self, channel: str, now: datetime, *, replies: bool | None = None
    ) -> QuerySet[Notification]:
        """Pending rows whose time has come; `replies` True: click answers only, False: none."""
        rows = Notification.objects.filter(channel=channel, state=DeliveryState.PENDING)
        if replies is True:
            rows = rows.filter(event=NotificationEvent.CLICK_REPLY)
        elif replies is False:
            rows = rows.exclude(event=NotificationEvent.CLICK_REPLY)
        return (
            rows.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
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
            external_id = self._send(channel, row)
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
            if self._stop.is_set():
                break
            # Click answers first, and even while the channel rests or has no bot token: each
            # carries its own credential (the response_url), and Slack's expires in 30 minutes.
            stats.add(self._send_channel(channel, replies=True))
            if not channel.configured or self._resting(channel) or self._stop.is_set():
                continue
            stats.add(self._send_channel(channel, replies=False))
            if not self._stop.is_set() and not self._resting(channel):
                stats.add(self.refresh_threads(channel))
        return stats

    def _resting(self, channel: Channel) -> bool:
        rest = self.resting_until.get(channel.name)
        return bool(rest and rest > self.clock())

    def _send_channel(self, channel: Channel, *, replies: bool) -> PassStats:
        """A batch of the channel's due click answers (`replies`) or of its other rows."""
        stats = PassStats()
        due = self.due(channel.name, self.clock(), replies=replies)
        for row in list(due[: self.batch_size]):
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
