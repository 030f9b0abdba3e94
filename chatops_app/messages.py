"""What a notification says, before any chat service's markup: its headline, its facts, its one
action button. `slack/render.py` and `discord/render.py` draw it, each with its one escaper.

Task text (goals, errors, notes) is written by agents and people, so it is untrusted: the facts
are (label, raw value) pairs, and only the renderers escape the values.

Factory events (a worker that paused itself, the daily budget) have no task: they render from
the row's `worker`, `note` and `data`, with the same escaping, and no buttons.

Every piece of that text passes through `clip` or `tail`, which redact secret-looking strings
(`redact.py`) before cutting: agent output and error text often quote keys and tokens.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from tasks_app.choices import (
    FACTORY_EVENTS,
    Delivery,
    DeliveryState,
    NotificationEvent,
    Status,
    error_hint,
)
from tasks_app.costs import format_usd
from tasks_app.models import Task
from tasks_app.pipeline import REVIEW_LABELS

from .models import Notification
from .redact import redact

GOAL_LIMIT = 500
ERROR_LIMIT = 400
NOTE_LIMIT = 300

HEADLINES: dict[str, str] = {
    NotificationEvent.DEAD_LETTER: "is in the dead-letter queue",
    NotificationEvent.BLOCKED: "is blocked and needs a person",
    NotificationEvent.AWAITING_APPROVAL: "is waiting for approval",
    NotificationEvent.AWAITING_MERGE: "passed every review and awaits merge",
}
FACTORY_HEADLINES: dict[str, str] = {
    NotificationEvent.WORKER_PAUSED: "Worker {worker} paused itself",
    NotificationEvent.BUDGET_REACHED: "The daily budget is reached",
}

# The button each event offers, when the task is still in that event's status.
EVENT_ACTIONS: dict[str, tuple[str, str]] = {
    NotificationEvent.AWAITING_APPROVAL: ("approve", "Approve"),
    NotificationEvent.DEAD_LETTER: ("retry", "Retry"),
    NotificationEvent.BLOCKED: ("retry", "Retry"),
}


def clip(text: str, limit: int) -> str:
    """Untrusted text, redacted, then cut to its first `limit` characters."""
    text = redact((text or "").replace("\x00", "")).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tail(text: str, limit: int) -> str:
    """Untrusted text, redacted, then cut to its last `limit` characters (where errors end)."""
    text = redact((text or "").replace("\x00", "")).strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def task_url(task: Task) -> str:
    """Absolute link to the task page, or "" when VIBE_BASE_URL is unset."""
    if not settings.VIBE_BASE_URL:
        return ""
    try:
        path = task.get_absolute_url()
    except NoReverseMatch:
        try:
            path = reverse("admin:tasks_app_task_change", args=[task.pk])
        except NoReverseMatch:
            return ""
    return settings.VIBE_BASE_URL + path


def _hint(task: Task) -> str:
    return error_hint(task.last_error_type)


def action_button(notification: Notification) -> tuple[str, str] | None:
    """The action button, only while the task still waits for it (else it would only fail)."""
    task = notification.task
    if task is None:
        return None  # a factory event: nothing to act on
    if notification.event == NotificationEvent.AWAITING_MERGE:
        if task.status != Status.REVIEW_NEEDED or task.delivery != Delivery.MERGE:
            return None  # a pull request is merged on GitHub; its link is in the facts
        if task.delivery_state == DeliveryState.CONFLICT:
            return ("rebase", "Rebase and rework")
        return ("merge", "Merge") if task.delivery_state == DeliveryState.AWAITING_MERGE else None
    action = EVENT_ACTIONS.get(notification.event)
    if action is None or task.status != notification.event:
        return None
    return action


def facts(notification: Notification) -> list[tuple[str, str]]:
    """(label, untrusted value) pairs shown under the headline, in order."""
    task = notification.task
    if task is None:
        return factory_facts(notification)
    shown = [
        ("Lane", task.get_lane_display()),
        ("Priority", str(task.priority)),
        ("Risk", task.get_risk_display()),
        ("Attempts", f"{task.attempt_count}/{task.max_attempts}"),
    ]
    if task.status != notification.event:
        shown += _moved_on(task)
    if notification.note:
        shown.append(("Why", clip(notification.note, NOTE_LIMIT)))
    return shown + _delivery_facts(notification, task) + _error_facts(notification, task)


def _moved_on(task: Task) -> list[tuple[str, str]]:
    """Where a task is now when it has left the event's status, and its last change."""
    shown = [("Now", Status(task.status).label if task.status in Status.values else "?")]
    change = task.history.order_by("-created_at", "-id").first()
    if change is not None:
        what = clip(change.note, 150) or Status(change.to_status).label.lower()
        shown.append(("Last change", f"{what} (by {change.actor})"))
    return shown


def _delivery_facts(notification: Notification, task: Task) -> list[tuple[str, str]]:
    """Reviews, branch, delivery, pull request and conflicts: how the work reaches the team."""
    merging = notification.event == NotificationEvent.AWAITING_MERGE
    candidates = [
        ("Reviews", _reviews(task)),
        ("Branch", task.branch if merging else ""),
        ("Delivery", task.delivery_summary if task.delivery_state else ""),
        ("Pull request", task.pr_url),
        (
            "Conflicts",
            clip(", ".join(task.conflicts), NOTE_LIMIT) if merging and task.conflicts else "",
        ),
    ]
    return [(label, value) for label, value in candidates if value]


def _error_facts(notification: Notification, task: Task) -> list[tuple[str, str]]:
    """The task's last error with its hint; not for events that are about waiting, not failing."""
    quiet = (NotificationEvent.AWAITING_APPROVAL, NotificationEvent.AWAITING_MERGE)
    if notification.event in quiet or not task.last_error_type:
        return []
    shown = [("Error", task.last_error_type)]
    if task.last_error:
        shown.append(("Error text", tail(task.last_error, ERROR_LIMIT)))
    hint = _hint(task)
    if hint:
        shown.append(("Hint", hint))
    return shown


def _reviews(task: Task) -> str:
    """The current round's reviews with their verdicts: 'security audit PASS 92 · QA running'."""
    if task.is_review or task.pipeline in ("", "none"):
        return ""
    rows = task.children.filter(review_round=task.review_round).order_by("pipeline_step", "pk")
    shown = []
    for review in rows.only("lane", "status", "verdict", "score"):
        label = REVIEW_LABELS.get(review.lane, review.lane)
        if review.verdict:
            score = f" {review.score}" if review.score is not None else ""
            shown.append(f"{label} {review.verdict}{score}")
        else:
            shown.append(f"{label} {Status(review.status).label.lower()}")
    return " · ".join(shown)


def headline(notification: Notification) -> str:
    if notification.event in FACTORY_EVENTS:
        template = FACTORY_HEADLINES[notification.event]
        return template.format(worker=notification.worker or "?")
    return f"Task #{notification.task_id} {HEADLINES.get(notification.event, notification.event)}"


def pool_url() -> str:
    """Absolute link to the worker pool, or "" when VIBE_BASE_URL is unset."""
    if not settings.VIBE_BASE_URL:
        return ""
    try:
        return settings.VIBE_BASE_URL + reverse("workers_app:pool")
    except NoReverseMatch:
        return ""


def _money(value: object) -> str:
    try:
        return format_usd(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return "?"


def factory_facts(notification: Notification) -> list[tuple[str, str]]:
    """(label, untrusted value) pairs of a factory event, from its note and data."""
    data = notification.data or {}
    facts: list[tuple[str, str]] = []
    if notification.event == NotificationEvent.WORKER_PAUSED:
        if notification.note:
            facts.append(("Why", clip(notification.note, ERROR_LIMIT)))
        task_ids = [str(pk) for pk in data.get("task_ids", [])]
        if task_ids:
            facts.append(("Attempts given back to", ", ".join(f"#{pk}" for pk in task_ids)))
        hint = error_hint(str(data.get("error_type", "")))
        if hint:
            facts.append(("Hint", hint))
        facts.append(
            (
                "Then",
                f"resume it: manage.py vibe resume {notification.worker}, "
                "or Resume on the workers page",
            )
        )
    elif notification.event == NotificationEvent.BUDGET_REACHED:
        facts.append(("Day", f"{data.get('day', '?')} ({data.get('time_zone', 'UTC')})"))
        facts.append(("Spent today", _money(data.get("spent_usd"))))
        facts.append(("Daily budget", _money(data.get("budget_usd"))))
        if notification.note:
            facts.append(("Why", clip(notification.note, NOTE_LIMIT)))
        facts.append(
            (
                "Then",
                "no new agent runs start until the day ends; raise VIBE_DAILY_BUDGET_USD to "
                "go on today",
            )
        )
    return facts


# --- A task's one message, and the replies in its thread ----------------------------------------


def digest(body: dict) -> str:
    """What a message shows, as a short fingerprint: it is only edited when this changes."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
