"""A worker's own status: pause, resume, drain, retire, and its heartbeat."""

from __future__ import annotations

import logging

from django.db import models
from django.utils import timezone

from workers_app.models import Worker, WorkerStatus, stale_cutoff

from .. import sqlite
from ..choices import Status
from ..models import Task
from .audit import audit
from .errors import IllegalTransition, InvalidInput, WorkerNotFound
from .intake import check_actor

logger = logging.getLogger(__name__)


# --- Workers ----------------------------------------------------------------------------------


def set_worker_status(worker_id: str, status: str, *, actor: str, reason: str = ""):
    """Pause, resume, drain or mark a worker offline. Paused and draining workers claim nothing.

    `reason` is shown on the pool and by `vibe worker` until the next change of status, so a
    worker that paused itself says why.
    """
    actor = check_actor(actor)
    if status not in WorkerStatus.values:
        raise InvalidInput(
            f"unknown worker status {status!r}; use one of {', '.join(WorkerStatus.values)}"
        )
    with sqlite.atomic():
        try:
            worker = Worker.objects.select_for_update().get(pk=worker_id)
        except Worker.DoesNotExist:
            raise WorkerNotFound(f"worker {worker_id} does not exist") from None
        if worker.status == status:
            raise IllegalTransition(f"worker {worker_id} is already {status}")
        Worker.objects.filter(pk=worker_id).update(
            status=status, status_reason=reason[:2000], updated_at=timezone.now()
        )
        logger.info("worker %s: %s → %s by %s", worker_id, worker.status, status, actor)
        audit(
            f"worker {status}",
            worker_id,
            actor=actor,
            outcome="done",
            reason=f"{worker.status} → {status}" + (f": {reason}" if reason else ""),
        )
        worker.status = status
        return worker


def pause_worker(worker_id: str, *, actor: str):
    return set_worker_status(worker_id, WorkerStatus.PAUSED, actor=actor)


def resume_worker(worker_id: str, *, actor: str):
    return set_worker_status(worker_id, WorkerStatus.ONLINE, actor=actor)


def retire_worker(worker_id: str, *, actor: str):
    """Take a stale worker out of the pool and the counts, keeping its row for attribution.

    Only a worker with no live process and no running task: a live one would heartbeat straight
    back (stop it first), and a running task's lease must run out (or the task be cancelled)
    before nobody holds it. A retired worker that heartbeats again is back in the pool, in the
    status it had; `runfactory` does not start it until then.
    """
    actor = check_actor(actor)
    with sqlite.atomic():
        try:
            worker = Worker.objects.select_for_update().get(pk=worker_id)
        except Worker.DoesNotExist:
            raise WorkerNotFound(f"worker {worker_id} does not exist") from None
        if worker.is_retired:
            raise IllegalTransition(f"worker {worker_id} is already retired")
        if worker.is_alive:
            raise IllegalTransition(
                f"worker {worker_id} is running (its last heartbeat is fresh); stop its process "
                "before retiring it, or pause it"
            )
        held = list(
            Task.objects.filter(worker_id=worker_id, status=Status.IN_PROGRESS)
            .order_by("id")
            .values_list("id", flat=True)[:5]
        )
        if held or worker.active_tasks:
            which = ", ".join(f"#{pk}" for pk in held) or f"{worker.active_tasks} slot(s)"
            raise IllegalTransition(
                f"worker {worker_id} still holds {which}; retire it once its lease runs out and "
                "the task is requeued (or cancel the task)"
            )
        now = timezone.now()
        # Compare-and-swap on what was checked: still silent, still holding nothing.
        silent = models.Q(last_heartbeat__isnull=True) | models.Q(last_heartbeat__lt=stale_cutoff())
        moved = (
            Worker.objects.filter(silent, pk=worker_id, active_tasks=0)
            .exclude(tasks__status=Status.IN_PROGRESS)
            .update(retired_at=now, updated_at=now)
        )
        if moved != 1:
            raise IllegalTransition(f"worker {worker_id} changed while retiring it; try again")
        logger.info("worker %s retired by %s", worker_id, actor)
        heard = worker.last_heartbeat.isoformat() if worker.last_heartbeat else "never"
        audit(
            "worker retired",
            worker_id,
            actor=actor,
            outcome="done",
            reason=f"{worker.status}, last heartbeat {heard}",
        )
        worker.retired_at = now
        return worker


def worker_heartbeat(worker_id: str) -> None:
    with sqlite.atomic():
        Worker.objects.filter(pk=worker_id).update(last_heartbeat=timezone.now())
