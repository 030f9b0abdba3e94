"""The factory's vocabularies: lanes, tiers, statuses, verdicts, delivery, attention events.

A leaf module (it imports only Django), so every app — the Worker model included — can name a
status or an event without importing the lifecycle or another app's models.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # Not news: the answer to a Slack button click, posted to the click's response_url.
    CLICK_REPLY = "click_reply", "Reply to a Slack click"


# Events about the factory rather than one task: their rows have no task.
FACTORY_EVENTS = (NotificationEvent.WORKER_PAUSED, NotificationEvent.BUDGET_REACHED)


@dataclass(frozen=True)
class ErrorType:
    retryable: bool
    hint: str
    # Infrastructure and configuration faults are the worker's, not the task's: they count
    # towards its circuit breaker (VIBE_WORKER_FAILURE_LIMIT), which gives their attempts back.
    infrastructure: bool = False
    # A failure a person must look at before more money is spent: blocked, not retried.
    blocks: bool = False
    # Set by the pipeline when its reviews stop the work, never by a worker's failed attempt.
    review: bool = False

    @staticmethod
    def label(name: str) -> str:
        return name.replace("_", " ")


ERROR_TYPES: dict[str, ErrorType] = {
    "agent_exit": ErrorType(
        True, "The agent exited non-zero. Read the run's transcript for its own error."
    ),
    "timeout": ErrorType(
        True, "The agent ran past its time limit. Raise the profile's timeout or split the task."
    ),
    "bad_verdict": ErrorType(
        True,
        "The auditor's output did not end with a valid ```json verdict block; "
        "check the role's SOP in prompts/ and the agent's output.",
    ),
    "lease_expired": ErrorType(
        True, "The worker stopped heartbeating (crashed, killed or cut off) while running it."
    ),
    "worker_error": ErrorType(
        True, "The worker hit an unexpected error handling this task; see the error text."
    ),
    "rate_limited": ErrorType(
        True,
        "The model provider rate-limited the agent. It is retried after the provider's "
        "retry-after, with a longer backoff; lower the pool's capacity if it keeps happening.",
    ),
    "no_change": ErrorType(
        True,
        "The builder said it succeeded but changed nothing. Read its transcript: the goal may "
        "be unclear, already done, or the agent could not write files.",
    ),
    "max_turns": ErrorType(
        True,
        "The agent used all its turns before finishing. Raise the profile's max_turns or split "
        "the task.",
    ),
    "reviewer_modified": ErrorType(
        True,
        "A reviewer changed files, which reviewers may not do. Its changes were set aside on "
        "a refs/vibe/set-aside/ ref, not kept on the branch; the review runs again.",
    ),
    "agent_missing": ErrorType(
        False,
        "The agent command was not found. Install it or fix the worker's agent profile, "
        "then retry.",
        infrastructure=True,
    ),
    "agent_auth": ErrorType(
        False,
        "The model provider refused the agent's credentials. Set a valid API key for the "
        "worker (see docs/agents.md), resume the worker, then retry.",
        infrastructure=True,
    ),
    "sandbox_error": ErrorType(
        False,
        "The agent sandbox (bubblewrap) could not start. Install bubblewrap or set "
        "VIBE_AGENT_SANDBOX=off (see docs/agents.md), then retry.",
        infrastructure=True,
    ),
    "permission_denied": ErrorType(
        False,
        "The agent was refused permissions it needed (its transcript lists them). Widen the "
        "profile's allowed tools or run it in the sandbox, then retry.",
    ),
    "config_error": ErrorType(
        False, "The worker or agent profile is misconfigured. Fix the configuration, then retry."
    ),
    "workspace_error": ErrorType(
        False,
        "The task's workspace could not be prepared. Check VIBE_WORKSPACE is a git "
        "repository the worker can write to, then retry.",
        infrastructure=True,
    ),
    "remote_auth": ErrorType(
        False,
        "The shared git remote (VIBE_GIT_REMOTE) refused the worker's credentials. Give the "
        "worker's user access (an SSH key or credential helper that needs no prompt), then retry.",
        infrastructure=True,
    ),
    "push_rejected": ErrorType(
        True,
        "The remote refused the task's branch (someone else pushed to it, or a hook declined "
        "it). Read the error; if it keeps happening, fix the branch or the hook, then retry.",
    ),
    "remote_unreachable": ErrorType(
        True,
        "The shared git remote (VIBE_GIT_REMOTE) could not be reached (address, network or "
        "repository path). Check `git fetch` works from the worker's host.",
        infrastructure=True,
    ),
    "budget_exceeded": ErrorType(
        False,
        "The task reached its budget (VIBE_TASK_BUDGET_USD). A person decides: raise the "
        "budget or split the task, then retry.",
        blocks=True,
    ),
    # Delivery: the work passed every review but did not reach the team.
    "pull_request_failed": ErrorType(
        False,
        "GitHub refused to open the pull request (its message says why: token scope, branch "
        "not pushed, base branch missing). Fix that, then retry: the factory opens it again.",
        blocks=True,
    ),
    "pr_closed": ErrorType(
        False,
        "The pull request was closed without merging. Ask for changes (a rework round on the "
        "same branch), reopen and merge it on GitHub, or cancel the task.",
        blocks=True,
    ),
    # The pipeline's: its reviews stopped the work.
    "review_blocked": ErrorType(
        False,
        "A review found a blocking finding. Read the findings on the task page, fix the work, "
        "then retry.",
        review=True,
    ),
    "review_failed": ErrorType(
        False,
        "Reviews kept failing. Read the findings, decide, then retry or cancel.",
        review=True,
    ),
    "review_cancelled": ErrorType(
        False,
        "A review of the work was cancelled, so it can never pass. Retry to rework it, or "
        "cancel it.",
        review=True,
    ),
}
# What a worker may report when an attempt fails.
WORKER_ERRORS = frozenset(n for n, t in ERROR_TYPES.items() if not t.review)
INFRASTRUCTURE_ERRORS = frozenset(n for n, t in ERROR_TYPES.items() if t.infrastructure)


# Every error type a task can carry, for filters: (value, label), by name.
ERROR_TYPE_CHOICES = [(name, ErrorType.label(name)) for name in sorted(ERROR_TYPES)]


def error_hint(error_type: str) -> str:
    """What a person should do about this error type ("" for none known)."""
    known = ERROR_TYPES.get(error_type)
    return known.hint if known else ""
