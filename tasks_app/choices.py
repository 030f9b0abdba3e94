"""The factory's vocabularies: lanes, tiers, statuses, verdicts, delivery, attention events.

A leaf module (it imports only Django), so every app — the Worker model included — can name a
status or an event without importing the lifecycle or another app's models.
"""

from __future__ import annotations

from django.db import models


class Lane(models.TextChoices):
    BACKEND = "backend", "Backend"
    FRONTEND = "frontend", "Frontend"
    QA = "qa", "QA"
    SECURITY = "security", "Security"
    UX = "ux", "UX / accessibility"
    DATA = "data", "Data quality"


class Tier(models.TextChoices):
    JUNIOR = "junior", "Junior"
    SENIOR = "senior", "Senior"
    LEAD = "lead", "Lead"


class Risk(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    IN_PROGRESS = "in_progress", "In progress"
    REVIEW_NEEDED = "review_needed", "Review needed"
    BLOCKED = "blocked", "Blocked"
    COMPLETED = "completed", "Completed"
    DEAD_LETTER = "dead_letter", "Dead letter"
    CANCELLED = "cancelled", "Cancelled"


OPEN_STATUSES = (
    Status.PENDING,
    Status.AWAITING_APPROVAL,
    Status.IN_PROGRESS,
    Status.REVIEW_NEEDED,
    Status.BLOCKED,
    Status.DEAD_LETTER,
)


class Delivery(models.TextChoices):
    """How finished work reaches the team, once every review passed."""

    BRANCH = "branch", "Branch"
    MERGE = "merge", "Merge"
    PULL_REQUEST = "pull_request", "Pull request"


class DeliveryState(models.TextChoices):
    NONE = "", "Not yet"
    COMMITTED = "committed", "Committed"  # branch delivery, no remote: the local branch
    PUSHED = "pushed", "Pushed"  # branch delivery: on the shared remote
    OPENING_PR = "opening_pr", "Opening pull request"
    AWAITING_MERGE = "awaiting_merge", "Awaiting merge"
    CONFLICT = "conflict", "Merge conflict"
    MERGED = "merged", "Merged"
    PR_CLOSED = "pr_closed", "Pull request closed"
    FAILED = "failed", "Delivery failed"


# Delivery states in which the work waits for a person (or GitHub) to take it in.
WAITING_DELIVERY = (DeliveryState.OPENING_PR, DeliveryState.AWAITING_MERGE, DeliveryState.CONFLICT)


class Verdict(models.TextChoices):
    PASS = "PASS", "Pass"
    FAIL = "FAIL", "Fail"


class Severity(models.TextChoices):
    CRITICAL = "CRITICAL", "Critical"
    HIGH = "HIGH", "High"
    MEDIUM = "MEDIUM", "Medium"
    LOW = "LOW", "Low"


class NotificationEvent(models.TextChoices):
    DEAD_LETTER = "dead_letter", "Dead letter"
    BLOCKED = "blocked", "Blocked"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    AWAITING_MERGE = "awaiting_merge", "Awaiting merge"
    # Not about one task: a worker paused itself (its circuit breaker), the daily budget ran out.
    WORKER_PAUSED = "worker_paused", "Worker paused itself"
    BUDGET_REACHED = "budget_reached", "Daily budget reached"


# Events about the factory rather than one task: their rows have no task.
FACTORY_EVENTS = (NotificationEvent.WORKER_PAUSED, NotificationEvent.BUDGET_REACHED)
