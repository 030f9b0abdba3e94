"""The lifecycle's refusals: each message is written for the person who asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..choices import Status

if TYPE_CHECKING:
    from ..models import Task


class LifecycleError(Exception):
    """A move the lifecycle refused; the message is written for the person who asked."""


class TaskNotFound(LifecycleError):
    pass


class WorkerNotFound(LifecycleError):
    pass


class IllegalTransition(LifecycleError):
    pass


class LeaseLost(IllegalTransition):
    """The worker no longer holds the task (lease expired, cancelled, or claimed again)."""


class InvalidInput(LifecycleError):
    pass


def status_label(status: str) -> str:
    return Status(status).label.lower() if status in Status.values else status


def illegal(task: Task, action: str, allowed: Sequence[str]) -> IllegalTransition:
    names = " or ".join(status_label(s) for s in allowed)
    return IllegalTransition(
        f"task {task.pk} is {status_label(task.status)}; only {names} tasks can be {action}"
    )


def lease_lost(task_id: int, worker_id: str, status: str | None) -> LeaseLost:
    return LeaseLost(
        f"task {task_id} is no longer held by {worker_id} (it is "
        f"{status_label(status or '?')}); its result was not recorded"
    )
