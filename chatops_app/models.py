"""Chat links (who a Slack or Discord user is here) and the notification outbox."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from tasks_app.choices import FACTORY_EVENTS, NotificationEvent


class Platform(models.TextChoices):
    SLACK = "slack", "Slack"
    DISCORD = "discord", "Discord"


class ChatLink(models.Model):
    """A chat user acts with the permissions of the Django user it is linked to.

    A link with a `workspace` (Slack team id, Discord guild id) only counts for requests from
    that workspace: user ids are not unique across Slack workspaces. A blank one counts in any
    (links made before workspaces were recorded; a single-workspace install).
    """

    platform = models.CharField(max_length=10, choices=Platform.choices)
    workspace = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="Slack team id (T…) or Discord guild id; blank = any.",
    )
    external_id = models.CharField(max_length=64, help_text="Slack user id (U…) or Discord id.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_links"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "chat_links"
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "workspace", "external_id"], name="chat_link_unique"
            )
        ]

    def __str__(self) -> str:
        where = f"@{self.workspace}" if self.workspace else ""
        return f"{self.platform}:{self.external_id}{where} → {self.user}"


def linked_user(platform: str, external_id: str, workspace: str = ""):
    """The active Django user behind a chat identity in `workspace`, or None.

    The link made for this workspace wins over a blank (any-workspace) one; an inactive user
    counts as unlinked, so switching someone off in the admin switches off their chat too.
    """
    if not external_id:
        return None
    links = ChatLink.objects.select_related("user").filter(
        platform=platform, external_id=external_id, user__is_active=True
    )
    workspaces = [workspace, ""] if workspace else [""]
    # "" sorts first, so the reverse order puts the workspace's own link ahead of a blank one.
    link = links.filter(workspace__in=workspaces).order_by("-workspace").first()
    return link.user if link else None


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (gave up)"


class Notification(models.Model):
    """One message to one chat channel, written in the same transaction as the task's change.

    The sender delivers rows in `pending` and marks them `sent` with a compare-and-swap, so a
    message is never lost when the chat service is down and never sent twice once it got through.

    A click reply (`CLICK_REPLY`) is not news: it carries the updated message and the click's
    Slack `response_url` in `data`, so a click's answer is delivered (and retried) like the rest.

    A task event has its task; a factory event (`FACTORY_EVENTS`) has none, and says what it is
    about in `worker` (a worker id, kept as text so the message outlives a deleted worker row)
    and `data` (the figures it shows). `key`, when set, makes a row once-only per channel: the
    daily budget's message is keyed by its day, so many workers noticing it write it once.
    """

    task = models.ForeignKey(
        "tasks_app.Task",
        on_delete=models.CASCADE,
        related_name="notifications",
        null=True,
        blank=True,
    )
    worker = models.CharField(
        max_length=64, blank=True, default="", db_default="", help_text="Worker id, if about one."
    )
    data = models.JSONField(
        default=dict,
        db_default=models.Value({}, output_field=models.JSONField()),
        blank=True,
        help_text="Figures a factory event shows (day, spend, budget, tasks given back).",
    )
    key = models.CharField(
        max_length=100,
        blank=True,
        default="",
        db_default="",
        help_text="Once-only key, e.g. budget_reached:2026-11-30.",
    )
    event = models.CharField(max_length=20, choices=NotificationEvent.choices)
    channel = models.CharField(max_length=10, choices=Platform.choices)
    state = models.CharField(
        max_length=10,
        choices=DeliveryState.choices,
        default=DeliveryState.PENDING,
        db_default=DeliveryState.PENDING,
    )
    note = models.TextField(blank=True, default="")
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    external_id = models.CharField(
        max_length=100, blank=True, default="", help_text="Slack ts or Discord message id."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "notifications"
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["channel", "next_attempt_at"],
                condition=Q(state="pending"),
                name="notifications_due_idx",
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["key", "channel"], condition=~Q(key=""), name="notification_key_unique"
            ),
            models.CheckConstraint(
                condition=Q(task__isnull=False)
                | Q(event__in=[e.value for e in (*FACTORY_EVENTS, NotificationEvent.CLICK_REPLY)]),
                name="notification_task_event_has_task",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.subject} → {self.channel} ({self.state})"

    @property
    def subject(self) -> str:
        """What the row is about, for logs and the admin: "#42", "@backend-1" or the day."""
        if self.task_id is not None:
            return f"#{self.task_id}"
        if self.event == NotificationEvent.CLICK_REPLY:
            task_id = str(self.data.get("task_id") or "")[:20]
            return f"click on #{task_id}" if task_id else "a slow /vibe command's answer"
        return self.worker or str(self.data.get("day", "")) or "factory"


def reply_to_click(response_url: str, message: dict, *, task_id: str = "") -> Notification:
    """Queue the answer to a Slack click (or a slow command) for the sender: never lost, never
    held by a slow Slack."""
    return Notification.objects.create(
        event=NotificationEvent.CLICK_REPLY,
        channel=Platform.SLACK,
        data={"response_url": response_url, "message": message, "task_id": task_id[:20]},
    )


def notify_factory(
    event: str, *, note: str = "", worker: str = "", data: dict | None = None, key: str = ""
) -> list[Notification]:
    """Write a factory event (no task) to every channel; returns the rows written.

    With a `key`, the event is written once only: a second call with the same key, from this
    process or another, writes nothing and returns [] (the unique constraint decides, so two
    workers racing to say "the budget is reached" cannot both win).
    """
    if event not in FACTORY_EVENTS:
        raise ValueError(f"{event!r} is not a factory event; use one of {FACTORY_EVENTS}")
    rows = [
        Notification(
            event=event,
            channel=platform,
            note=note[:2000],
            worker=worker[:64],
            data=data or {},
            key=key[:100],
        )
        for platform in Platform
    ]
    try:
        with transaction.atomic():
            return Notification.objects.bulk_create(rows)
    except IntegrityError:
        if not key:
            raise
        return []


class ChatThread(models.Model):
    """A task's one message in a chat channel: kept up to date in place, later news as replies.

    The first notification about a task posts the message and records its id here (Slack `ts`,
    Discord message id); later ones edit it to show where the task is now and post their news in
    its thread. `posting_until` is the lease of the sender posting that first message, so two
    senders never both start a thread; `shown` is a digest of what the message shows, so it is
    only edited when that changes. `open` goes False once a finished task is shown as finished.
    """

    # No index of its own: the unique (task, channel) serves every lookup by task.
    task = models.ForeignKey(
        "tasks_app.Task", on_delete=models.CASCADE, related_name="chat_threads", db_index=False
    )
    channel = models.CharField(max_length=10, choices=Platform.choices)
    chat_channel = models.CharField(
        max_length=100, blank=True, default="", help_text="Slack or Discord channel id."
    )
    external_id = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="Slack ts or Discord message id of the task's message; blank until posted.",
    )
    notification = models.ForeignKey(
        Notification,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The latest news the message shows.",
    )
    posting_until = models.DateTimeField(null=True, blank=True)
    shown = models.CharField(max_length=64, blank=True, default="")
    synced_at = models.DateTimeField(
        null=True, blank=True, help_text="The task's updated_at when the message was last drawn."
    )
    open = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        db_table = "chat_threads"
        constraints = [
            models.UniqueConstraint(fields=["task", "channel"], name="chat_thread_unique")
        ]
        indexes = [
            models.Index(fields=["channel"], condition=Q(open=True), name="chat_threads_open_idx")
        ]

    def __str__(self) -> str:
        return f"#{self.task_id} → {self.channel} {self.external_id or '(posting)'}"


class SignedRequest(models.Model):
    """A verified chat request, kept for its signing window: the same one twice is a replay.

    In the database, so the check holds across every web process; the unique signature decides.
    """

    signature = models.CharField(max_length=200, unique=True)
    door = models.CharField(max_length=20)
    seen_at = models.DateTimeField(db_default=Now(), default=timezone.now, db_index=True)

    class Meta:
        db_table = "chat_signed_requests"

    def __str__(self) -> str:
        return f"{self.door} {self.signature[:16]}…"


def first_sighting(door: str, signature: str, *, window_seconds: int) -> bool:
    """Record a verified request's signature; False when it was seen already (a replay)."""
    now = timezone.now()
    # Older than the window they cannot verify again anyway; a cheap trim keeps the table small.
    SignedRequest.objects.filter(seen_at__lt=now - timedelta(seconds=2 * window_seconds)).delete()
    try:
        with transaction.atomic():
            SignedRequest.objects.create(signature=signature[:200], door=door, seen_at=now)
    except IntegrityError:
        return False
    return True
