"""Chat links (who a Slack or Discord user is here) and the notification outbox."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Platform(models.TextChoices):
    SLACK = "slack", "Slack"
    DISCORD = "discord", "Discord"


class ChatLink(models.Model):
    """A chat user acts with the permissions of the Django user it is linked to."""

    platform = models.CharField(max_length=10, choices=Platform.choices)
    external_id = models.CharField(max_length=64, help_text="Slack user id (U…) or Discord id.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_links"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "chat_links"
        constraints = [
            models.UniqueConstraint(fields=["platform", "external_id"], name="chat_link_unique")
        ]

    def __str__(self) -> str:
        return f"{self.platform}:{self.external_id} → {self.user}"


class NotificationEvent(models.TextChoices):
    DEAD_LETTER = "dead_letter", "Dead letter"
    BLOCKED = "blocked", "Blocked"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (gave up)"


class Notification(models.Model):
    """One message to one chat channel, written in the same transaction as the task's change.

    The sender delivers rows in `pending` and marks them `sent` with a compare-and-swap, so a
    message is never lost when the chat service is down and never sent twice once it got through.
    """

    task = models.ForeignKey(
        "tasks_app.Task", on_delete=models.CASCADE, related_name="notifications"
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

    def __str__(self) -> str:
        return f"{self.event} #{self.task_id} → {self.channel} ({self.state})"
