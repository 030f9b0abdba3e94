"""The worker's circuit breaker: stop burning tasks when the fault is the worker's own.

A missing agent, refused credentials, a broken sandbox or workspace fail every task the same
way, and each failure dead-letters a task that did nothing wrong. So the worker counts its
failures of those infrastructure types (`INFRASTRUCTURE_ERRORS`) in a row; at
`VIBE_WORKER_FAILURE_LIMIT` it trips: the worker pauses itself with the reason (shown on the
pool and by `vibe worker`), gives the streak's tasks their attempts back so they go to a
healthy worker, and tells people in chat. Any success, or a failure that is the task's own,
ends the streak.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import transaction

from tasks_app import actors, lifecycle
from tasks_app.choices import INFRASTRUCTURE_ERRORS, NotificationEvent
from tasks_app.signals import factory_alert
from workers_app.models import WorkerStatus

logger = logging.getLogger(__name__)

REASON_ERROR_LIMIT = 300


class CircuitBreaker:
    """Counts consecutive infrastructure failures; thread-safe (a worker runs several agents)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = max(1, limit if limit is not None else settings.VIBE_WORKER_FAILURE_LIMIT)
        self._lock = threading.Lock()
        self._streak: list[tuple[str, int]] = []  # (error type, task id), oldest first
        self._last_error = ""

    def record_failure(self, error_type: str, task_id: int, error: str = "") -> bool:
        """Count a failed run; True when this failure trips the breaker.

        A failure whose type is the task's own (agent_exit, timeout, …) ends the streak: the
        agent ran, so the worker is not what is broken.
        """
        with self._lock:
            if error_type not in INFRASTRUCTURE_ERRORS:
                self._streak.clear()
                self._last_error = ""
                return False
            self._streak.append((error_type, task_id))
            self._last_error = error or self._last_error
            return len(self._streak) >= self.limit

    def record_success(self) -> None:
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._streak.clear()
            self._last_error = ""

    @property
    def tripped(self) -> bool:
        with self._lock:
            return len(self._streak) >= self.limit

    @property
    def task_ids(self) -> list[int]:
        """The streak's tasks, oldest first, each once."""
        with self._lock:
            return list(dict.fromkeys(task_id for _, task_id in self._streak))

    @property
    def error_type(self) -> str:
        """The type of the streak's latest failure ("" when there is no streak)."""
        with self._lock:
            return self._streak[-1][0] if self._streak else ""

    def describe(self, last_error: str = "") -> str:
        """ "3 agent_auth failures in a row: <last error>"; mixed types are all named."""
        with self._lock:
            types = list(dict.fromkeys(kind for kind, _ in self._streak))
            count = len(self._streak)
            last = (last_error or self._last_error).strip()
        what = types[0] if len(types) == 1 else "infrastructure (" + ", ".join(types) + ")"
        text = f"{count} {what} failure{'s' if count != 1 else ''} in a row"
        if last:
            last = " ".join(last.split())
            if len(last) > REASON_ERROR_LIMIT:
                last = last[: REASON_ERROR_LIMIT - 1] + "…"
            text += f": {last}"
        return text

    @property
    def reason(self) -> str:
        return self.describe()


def trip(worker_id: str, breaker: CircuitBreaker, *, last_error: str) -> str:
    """Pause the worker itself, give the streak's tasks their attempts back, tell people.

    Returns the reason. Everything is one short transaction, so the message is never lost,
    never sent for a pause that did not happen, and lists exactly the tasks given back. A task
    a person has moved since (retried, cancelled, claimed again) keeps its state. The breaker
    is reset: once a person resumes the worker, it counts afresh.
    """
    reason = breaker.describe(last_error)
    error_type = breaker.error_type
    actor = actors.worker(worker_id)
    given_back: list[int] = []
    with transaction.atomic():
        try:
            lifecycle.set_worker_status(worker_id, WorkerStatus.PAUSED, actor=actor, reason=reason)
        except lifecycle.IllegalTransition:
            # Already paused (a person was quicker): keep their reason; still give back and tell.
            logger.info("worker %s was already paused when its breaker tripped", worker_id)
        for task_id in breaker.task_ids:
            try:
                lifecycle.give_back_attempt(
                    task_id, actor=actor, reason=f"{worker_id} paused itself: {reason}"
                )
            except lifecycle.LifecycleError as exc:
                logger.info("task %s keeps its attempt: %s", task_id, exc)
            else:
                given_back.append(task_id)
        factory_alert.send(
            sender=__name__,
            event=NotificationEvent.WORKER_PAUSED,
            note=reason,
            worker=worker_id,
            data={"task_ids": given_back, "error_type": error_type, "limit": breaker.limit},
        )
    logger.warning(
        "worker %s paused itself: %s; attempts given back: %s",
        worker_id,
        reason,
        ", ".join(f"#{pk}" for pk in given_back) or "none",
    )
    breaker.reset()
    return reason
