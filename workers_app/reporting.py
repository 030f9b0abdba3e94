"""Telling the lifecycle how a held task's run ended, once, through database faults.

The loop decides what a run came to (`outcomes`) and keeps it on the slot; a `Reporter` writes
it: the Run row first, then the lifecycle move. A database fault raises and leaves the ending on
its slot, to be reported again after a pause; a lost lease is logged, not raised, and when the
broken connection had in fact committed the report, the history says so (`landed`). Failures
feed the worker's circuit breaker, and claims whose answer a fault lost are given back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from tasks_app import actors, lifecycle
from tasks_app.choices import INFRASTRUCTURE_ERRORS, Status
from tasks_app.models import Task, TaskHistory

from . import runs
from .adapters.base import AgentKind
from .breaker import CircuitBreaker
from .breaker import trip as breaker_trip
from .slots import Ending, Slot

logger = logging.getLogger(__name__)


class Reporter:
    """One worker's reports; `paused_itself` and `sweep_strays` are read by the loop."""

    def __init__(self, worker_id: str, *, kind: AgentKind, failure_limit: int) -> None:
        self.worker_id = worker_id
        self.actor = actors.worker(worker_id)
        self.kind = kind
        self.breaker = CircuitBreaker(failure_limit)
        self.paused_itself = False  # the breaker tripped; until a person resumes the worker
        self.sweep_strays = False  # a claim may have committed unseen: look for it

    def record(self, slot: Slot, end: Ending) -> None:
        """The ending on the slot's Run row (and the transcript's last lines)."""
        if end.result is not None:
            runs.close_run(
                slot,
                end.result,
                end.outcome,
                report=end.report,
                change=end.change,
                session_total=self.kind.usage_is_session_total,
            )
            return
        if slot.transcript is not None:
            slot.transcript.flush()
        slot.run.close(end.outcome, **({"stderr_tail": end.error[-8000:]} if end.error else {}))

    def settle(self, slot: Slot, end: Ending) -> None:
        """The lifecycle move for an ending that is not a completion (the loop claims on those)."""
        if end.outcome == "cancelled":
            logger.info("%s: stopped the agent of cancelled task %s", self.worker_id, slot.task.pk)
        elif end.outcome == "lease_lost":
            if end.give_back:
                with contextlib.suppress(lifecycle.LeaseLost):
                    lifecycle.release(
                        slot.task.pk, worker_id=self.worker_id, token=slot.token, note=end.note
                    )
        elif end.outcome == "released":
            if self.call(lifecycle.release, slot, note=end.note):
                logger.info("%s: released task %s", self.worker_id, slot.task.pk)
        else:
            self.fail(slot, end.outcome, end.error, retry_after=end.retry_after)

    def call(self, func: Callable[..., Any], slot: Slot, **kwargs: Any) -> Any:
        """A lifecycle call for a held task, returning what it returns; a lost lease is logged,
        not raised, and returns None (True when an earlier try had landed after all)."""
        try:
            return func(slot.task.pk, worker_id=self.worker_id, token=slot.token, **kwargs)
        except lifecycle.LeaseLost as exc:
            if slot.ending is not None and slot.ending.tries and self.landed(slot):
                logger.info("%s: the report of task %s had landed", self.worker_id, slot.task.pk)
                return True
            logger.warning("%s: %s", self.worker_id, exc)
            status = Task.objects.filter(pk=slot.task.pk).values_list("status", flat=True).first()
            slot.run.mark("cancelled" if status == Status.CANCELLED else "lease_lost")
            return None
        except DatabaseError:
            if slot.ending is not None:
                slot.ending.tries += 1
            raise

    def landed(self, slot: Slot) -> bool:
        """After a report whose answer a broken connection lost: did it commit? Only this
        claim's own report moves the task out of `in_progress` under this worker's name."""
        return TaskHistory.objects.filter(
            task_id=slot.task.pk,
            from_status=Status.IN_PROGRESS,
            actor=self.actor,
            created_at__gte=slot.started_at or timezone.now(),
        ).exists()

    def fail(
        self, slot: Slot, error_type: str, error: str, *, retry_after: float | None = None
    ) -> None:
        if self.call(
            lifecycle.fail, slot, error_type=error_type, error=error, retry_after=retry_after
        ):
            logger.info("%s: task %s failed (%s)", self.worker_id, slot.task.pk, error_type)
        if self.paused_itself and error_type in INFRASTRUCTURE_ERRORS:
            # A run that was already going when the breaker tripped: the same fault, the same
            # remedy: its attempt is given back too.
            with contextlib.suppress(lifecycle.LifecycleError):
                lifecycle.give_back_attempt(
                    slot.task.pk, actor=self.actor, reason=f"{self.worker_id} paused itself"
                )
            return
        if self.breaker.record_failure(error_type, slot.task.pk, error):
            try:
                breaker_trip(self.worker_id, self.breaker, last_error=error)
                self.paused_itself = True
            finally:
                self.breaker.reset()

    def release_unstarted(self, task: Task, note: str) -> None:
        """Give back a task claimed but never started, without counting an attempt."""
        try:
            lifecycle.release(task.pk, worker_id=self.worker_id, token=task.claim_token, note=note)
        except lifecycle.LifecycleError as exc:
            logger.warning("%s: %s", self.worker_id, exc)
        except DatabaseError as exc:
            logger.warning("%s: could not release task %s yet: %s", self.worker_id, task.pk, exc)
            self.sweep_strays = True

    def release_strays(self, running: Iterable[int]) -> None:
        """Give back the tasks this worker holds without knowing (none of `running`): claims that
        committed while the database connection broke, so their answer never came."""
        held = Task.objects.filter(status=Status.IN_PROGRESS, worker_id=self.worker_id)
        for task in held.exclude(pk__in=list(running)):
            logger.warning(
                "%s: task %s was claimed unseen; giving it back", self.worker_id, task.pk
            )
            with contextlib.suppress(lifecycle.LifecycleError):
                lifecycle.release(
                    task.pk,
                    worker_id=self.worker_id,
                    token=task.claim_token,
                    note="released: claimed while the database failed, never started",
                )
        self.sweep_strays = False
