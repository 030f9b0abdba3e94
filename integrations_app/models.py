"""What the GitHub door remembers: events handled once, comments to send, ETags and cursors.

Three small tables, each with one job:

- `GitHubEvent`: one row per thing GitHub told us (a pull request closed, a review, a labelled
  issue, a `/vibe do` comment), keyed so the same event is handled once whether it came by the
  webhook or by polling. A row whose handling hit a passing fault (GitHub down while fetching
  a review's comments) stays `pending` and the sync loop tries it again: nothing is lost.
- `WebhookDelivery`: every signed webhook delivery by its `X-GitHub-Delivery` id, so a replay
  (GitHub's "Redeliver" button, or an attacker resending a captured request) changes nothing.
- `IssueComment`: comments to post on issues (the link back to the task), an outbox the sync
  loop sends, so a comment is not lost when GitHub is down at the moment the task is made.
- `SyncState`: the poller's ETags (per URL) and its comment cursor, kept across restarts.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class EventState(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed (gave up)"


class EventSource(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    POLL = "poll", "Polling"


class EventKind(models.TextChoices):
    PR_CLOSED = "pr_closed", "Pull request closed"
    REVIEW = "review", "Changes requested"
    ISSUE = "issue", "Issue labelled"
    COMMAND = "command", "/vibe do comment"


class GitHubEvent(models.Model):
    """One GitHub event, handled once however it arrived.

    `key` names the event, not the delivery: `pr:owner/repo#7:closed:<closed_at>`,
    `review:<id>`, `issue:owner/repo#12`, `comment:<id>`. The first writer of a key handles it;
    everyone else (a redelivery, the poller seeing it later) finds the row and does nothing.
    `attempts` is the fencing token of the one handler that holds the row, as in the outbox.
    """

    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    source = models.CharField(max_length=10, choices=EventSource.choices)
    payload = models.JSONField(default=dict, blank=True, help_text="What the handler needs.")
    state = models.CharField(max_length=10, choices=EventState.choices, default=EventState.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True, default="", help_text="What was done, or the error.")
    task = models.ForeignKey(
        "tasks_app.Task",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="github_events",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    handled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "github_events"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(state="pending"),
                name="github_events_pending_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


class WebhookDelivery(models.Model):
    """One signed webhook delivery, by GitHub's delivery id: a replay is answered "duplicate"."""

    delivery_id = models.CharField(max_length=100, unique=True)
    event = models.CharField(max_length=60)
    action = models.CharField(max_length=60, blank=True, default="")
    outcome = models.TextField(blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        db_table = "github_webhook_deliveries"
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event}.{self.action} {self.delivery_id}"


class CommentState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (gave up)"


class IssueComment(models.Model):
    """A comment to post on a GitHub issue, sent by the sync loop with retries.

    `key` makes a comment once-only (`task-link:<task id>`); the body carries a hidden marker so
    a retry after an unclear failure (a timeout after GitHub took the comment) finds the comment
    already there instead of posting it twice.
    """

    key = models.CharField(max_length=200, unique=True)
    repo = models.CharField(max_length=200)
    issue_number = models.IntegerField()
    body = models.TextField()
    task = models.ForeignKey(
        "tasks_app.Task",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="github_comments",
    )
    state = models.CharField(
        max_length=10, choices=CommentState.choices, default=CommentState.PENDING
    )
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    comment_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "github_issue_comments"
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(state="pending"),
                name="github_comments_pending_idx",
            )
        ]

    def __str__(self) -> str:
        return f"comment on {self.repo}#{self.issue_number} ({self.state})"


class SyncState(models.Model):
    """A remembered value of the poller: an ETag per URL (`etag:<path>`) or a cursor."""

    key = models.CharField(max_length=500, unique=True)
    etag = models.CharField(max_length=200, blank=True, default="")
    value = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "github_sync_state"
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key
