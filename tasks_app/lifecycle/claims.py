"""The workers' side: claim, heartbeat, complete, fail, release, and requeueing lost leases.

These run many times a second, so their writes are the measured statements of `_sql`, built
before the transaction and run inside it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from workers_app.models import Worker

from .. import actors, pipeline, sqlite
from ..choices import ERROR_TYPES, WORKER_ERRORS, Status
from ..models import Task
from ..verdicts import VerdictError, validate_result
from ._sql import (
    GIVE_SLOT_BACK_SQL,
    HISTORY_SQL,
    ID_COLUMN,
    MAY_CLAIM_SQL,
    TAKE_SLOT_SQL,
    TASKS,
    claim_sql,
    fetch_task,
    statements,
    task_from_row,
)
from .delivery import MAX_CHANGED_FILES, delivery_step
from .errors import InvalidInput, LeaseLost, TaskNotFound, WorkerNotFound, lease_lost
from .intake import task_id as checked_task_id
from .moves import Move, apply_move, load, prepare_move, release_worker_slot
from .reviews import after_review, spawn_reviews

MAX_ERROR_LENGTH = 20_000


# --- Claiming and running (the workers' side) -------------------------------------------------


def claim_next(worker, *, lease_seconds: int | None = None) -> Task | None:
    """Atomically take the most urgent claimable task of the worker's lane, or None.

    The worker's slot is taken first, by an UPDATE that re-checks status and capacity as it
    writes, so `active_tasks` never passes `capacity_limit` however many processes drive one
    worker; on PostgreSQL the task row is taken with SKIP LOCKED so workers of one lane never
    wait on each other.
    """
    worker_id = worker.pk if isinstance(worker, Worker) else str(worker)
    lease = timedelta(seconds=lease_seconds or settings.VIBE_LEASE_SECONDS)
    if connection.vendor == "sqlite" and not connection.in_atomic_block:
        # SQLite has one write lock for the whole file: an idle worker that polls must not
        # take it just to find nothing. A plain read (never blocked in WAL mode) answers
        # that; the transaction below checks everything again before claiming.
        with connection.cursor() as cursor:
            cursor.execute(
                MAY_CLAIM_SQL,
                [connection.ops.adapt_datetimefield_value(timezone.now()), worker_id],
            )
            row = cursor.fetchone()
        if row is None:
            raise WorkerNotFound(f"worker {worker_id} does not exist")
        if not row[0]:
            return None
    claim = Claim(worker_id, lease)
    with sqlite.atomic():
        row = claim.take()
    return None if row is None else task_from_row(transaction.get_connection(), row)


class Claim:
    """A claim's statements, built before the transaction and run inside it by `take`."""

    def __init__(self, worker_id: str, lease: timedelta) -> None:
        self.db = transaction.get_connection()
        self.worker_id = worker_id
        self.sql = claim_sql(self.db)
        self.actor, self.note = actors.worker(worker_id), f"claimed by {worker_id}"
        # The lease may start a moment before the claim (the wait in the queue): it only
        # errs on the safe side, by milliseconds.
        self.lease_expires_at = self.db.ops.adapt_datetimefield_value(timezone.now() + lease)

    def take(self, *, missing_ok: bool = False):
        """The claimed row, or None. Nothing is left to undo when there is nothing to claim
        (the slot is handed back in the same transaction), so a caller may run this after
        writes of its own."""
        with statements(self.db) as cursor:
            slot = cursor.execute(TAKE_SLOT_SQL, [self.worker_id]).fetchone()
            if slot is None:  # paused, draining, at capacity — or gone
                if not missing_ok:
                    cursor.execute(
                        "SELECT 1 FROM worker_health WHERE worker_id = %s", [self.worker_id]
                    )
                    if cursor.fetchone() is None:
                        raise WorkerNotFound(f"worker {self.worker_id} does not exist")
                return None
            # Stamped now that the write lock (SQLite) or the worker's row (PostgreSQL) is
            # ours: a time taken before waiting could predate the very task claimed.
            stamp = self.db.ops.adapt_datetimefield_value(timezone.now())
            params = [self.worker_id, self.lease_expires_at, stamp, stamp, slot[0], stamp]
            row = cursor.execute(self.sql, params).fetchone()
            if row is None:
                cursor.execute(GIVE_SLOT_BACK_SQL, [self.worker_id])
                return None
            history = [row[ID_COLUMN], Status.PENDING.value, Status.IN_PROGRESS.value]
            cursor.execute(HISTORY_SQL, [*history, self.actor, self.note, "claimed", "", stamp])
        return row


def load_held(task_id: int, worker_id: str, token: int) -> Task:
    """The task as its worker last left it, read without a lock: while the claim holds, only
    the holder changes it, and every write of the holder re-checks the claim (`held=`)."""
    pk = checked_task_id(task_id)
    task = fetch_task(f"WHERE {TASKS}.id = %s", [pk])
    if task is None:
        raise TaskNotFound(f"task {pk} does not exist")
    if (
        task.status != Status.IN_PROGRESS
        or task.worker_id != worker_id
        or task.claim_token != token
    ):
        raise lease_lost(task.pk, worker_id, task.status)
    return task


def heartbeat(task_id: int, *, worker_id: str, token: int, lease_seconds: int | None = None):
    """Extend a running task's lease; raises LeaseLost when the worker lost it."""
    lease = timedelta(seconds=lease_seconds or settings.VIBE_LEASE_SECONDS)
    now = timezone.now()
    with sqlite.atomic():  # in the SQLite writers' queue, so busy claimers never starve it
        changed = Task.objects.filter(
            pk=task_id, status=Status.IN_PROGRESS, worker_id=worker_id, claim_token=token
        ).update(lease_expires_at=now + lease)
    if changed != 1:
        raise LeaseLost(f"task {task_id} is no longer held by {worker_id}")


def _change_of(result: dict) -> dict:
    """A builder's change as the worker measured it: base commit and files with +/- counts."""
    out: dict = {}
    base = result.get("base_commit")
    if isinstance(base, str) and base:
        out["base_commit"] = base[:64]
    remote = result.get("remote")
    if isinstance(remote, str) and remote:
        out["remote"] = remote[:200]  # the shared remote the branch was pushed to
    files = result.get("changed_files")
    if isinstance(files, list):
        out["changed_files"] = [
            {
                "path": str(item.get("path", ""))[:1000],
                "added": item["added"] if isinstance(item.get("added"), int) else None,
                "removed": item["removed"] if isinstance(item.get("removed"), int) else None,
            }
            for item in files[:MAX_CHANGED_FILES]
            if isinstance(item, dict) and item.get("path")
        ]
    return out


@dataclass
class _Completion:
    """A completion read, checked and built before its transaction; `_write_completion` runs it."""

    move: Move
    worker_id: str
    spawns_reviews: bool
    conflicts: list[str] | None = None  # a review's merge check of the work, for its parent


def _conflicts_of(result: dict) -> list[str] | None:
    """Files the branch conflicts in with its base, as the worker checked (None: not checked)."""
    files = result.pop("conflicts", None)
    if not isinstance(files, list):
        return None
    return [str(f)[:1000] for f in files[:MAX_CHANGED_FILES] if f]


def _prepare_completion(task_id: int, worker_id: str, token: int, result: dict | None):
    # Read and check everything before the transaction, so the lock is held for the writes
    # alone; the writes re-check the claim (`held`), so nothing read here can be stale.
    result = dict(result or {})
    task = load_held(task_id, worker_id, token)
    conflicts = _conflicts_of(result)
    fields: dict = {
        "finished_at": timezone.now(),
        "lease_expires_at": None,
        "branch": str(result.pop("branch", "") or task.branch)[:200],
        "head_commit": str(result.pop("head_commit", "") or task.head_commit)[:64],
        "diff_stat": str(result.pop("diff_stat", "") or task.diff_stat),
        "base_branch": str(result.pop("base_branch", "") or task.base_branch)[:200],
    }
    if conflicts is not None and not task.is_review:
        fields["conflicts"] = conflicts
    if task.is_review or "verdict" in result:
        try:
            clean = validate_result(result, lane=task.lane)
        except VerdictError as exc:
            raise InvalidInput(f"task {task.pk}: malformed verdict: {exc}") from None
        fields.update(result=clean, verdict=clean["verdict"], score=clean["score"])
    else:
        fields["result"] = {"summary": str(result.get("summary", ""))[:4000], **_change_of(result)}
    steps = pipeline.steps(task.pipeline) if not task.is_review else ()
    notify = ""
    if steps:
        fields.update(status=Status.REVIEW_NEEDED, pipeline_step=0)
        note = f"work done; {steps[0].label} next"
    elif task.is_review or "verdict" in fields:
        fields["status"] = Status.COMPLETED
        note = f"verdict {fields['verdict']}" if "verdict" in fields else "completed"
    else:
        for name in ("branch", "result", "base_branch", "conflicts"):
            if name in fields:
                setattr(task, name, fields[name])
        delivery, note, notify = delivery_step(task, passed="completed")
        fields.update(delivery)
    move = prepare_move(
        task,
        Status.IN_PROGRESS,
        actor=actors.worker(worker_id),
        note=note,
        event="completed",
        held=(worker_id, token),
        notify=notify,
        **fields,
    )
    return _Completion(move, worker_id, bool(steps), conflicts if task.is_review else None)


def _write_completion(done: _Completion) -> None:
    task = done.move.task
    if connection.vendor == "postgresql" and task.parent_id:
        # Lock the reviewed work before its review — the order cancel() uses — so the two
        # never deadlock, and reviews of one step finishing together see each other.
        load(task.parent_id)
    apply_move(done.move)
    if done.spawns_reviews:
        spawn_reviews(task, 0)
    release_worker_slot(done.worker_id)
    if task.is_review and task.parent_id:
        if done.conflicts is not None:  # the reviewer's check of the work against its base
            Task.objects.filter(pk=task.parent_id).update(conflicts=done.conflicts)
        after_review(task.parent_id, actor=actors.worker(done.worker_id))


def complete(task_id: int, *, worker_id: str, token: int, result: dict | None = None) -> Task:
    """The agent finished. Reviews record their verdict; building work goes on to review."""
    done = _prepare_completion(task_id, worker_id, token, result)
    with sqlite.atomic():
        _write_completion(done)
    return done.move.task


def complete_and_claim(
    task_id: int,
    *,
    worker_id: str,
    token: int,
    result: dict | None = None,
    lease_seconds: int | None = None,
) -> tuple[Task, Task | None]:
    """`complete`, then `claim_next` for the slot it frees, in one transaction.

    A busy worker then takes the write lock (on SQLite, the writers' queue) once per task
    rather than twice. The claim follows the rules of `claim_next`: a paused or draining
    worker, or one deleted meanwhile, completes and claims nothing.
    """
    lease = timedelta(seconds=lease_seconds or settings.VIBE_LEASE_SECONDS)
    done = _prepare_completion(task_id, worker_id, token, result)
    claim = Claim(worker_id, lease)
    with sqlite.atomic():
        _write_completion(done)
        row = claim.take(missing_ok=True)
    following = None if row is None else task_from_row(transaction.get_connection(), row)
    return done.move.task, following


def fail(
    task_id: int,
    *,
    worker_id: str,
    token: int,
    error_type: str,
    error: str = "",
    retry_after: float | None = None,
) -> Task:
    """A failed attempt: back to pending with backoff while attempts remain, else dead letter.

    `retry_after` (seconds, from a provider's rate limit) is a floor under the backoff.
    """
    if error_type not in WORKER_ERRORS:
        raise InvalidInput(
            f"unknown error type {error_type!r}; use one of {', '.join(sorted(WORKER_ERRORS))}"
        )
    task = load_held(task_id, worker_id, token)
    with sqlite.atomic():
        record_failure(
            task,
            error_type,
            error,
            actor=actors.worker(worker_id),
            held=(worker_id, token),
            retry_after=retry_after,
        )
    return task


def record_failure(
    task: Task,
    error_type: str,
    error: str,
    *,
    actor: str,
    held: tuple[str, int] | None = None,
    retry_after: float | None = None,
) -> None:
    kind = ERROR_TYPES[error_type]
    attempts = task.attempt_count + 1
    now = timezone.now()
    fields: dict[str, Any] = {
        "attempt_count": attempts,
        "last_error_type": error_type,
        "last_error": (error or "")[-MAX_ERROR_LENGTH:],
        "lease_expires_at": None,
        "finished_at": now,
    }
    held_by = task.worker_id
    if kind.blocks:
        note = f"blocked: {error_type}: {kind.hint}"
        fields.update(status=Status.BLOCKED, worker_id=None)
    elif kind.retryable and attempts < task.max_attempts:
        # A rate limit backs off twice as long, and never sooner than the provider asked.
        delay = backoff(attempts + (1 if error_type == "rate_limited" else 0))
        if retry_after:
            delay = max(delay, timedelta(seconds=min(retry_after, 24 * 3600)))
        note = (
            f"attempt {attempts}/{task.max_attempts} failed ({error_type}); "
            f"retrying in {delay.total_seconds():.0f}s"
        )
        fields.update(status=Status.PENDING, not_before=now + delay, worker_id=None)
    else:
        note = (
            f"attempt {attempts}/{task.max_attempts} failed ({error_type})"
            if kind.retryable
            else f"{error_type} is not worth retrying: {kind.hint}"
        )
        fields["status"] = Status.DEAD_LETTER
    failed = prepare_move(
        task, Status.IN_PROGRESS, actor=actor, note=note, event="failed", held=held, **fields
    )
    apply_move(failed)
    release_worker_slot(held_by)


def release(task_id: int, *, worker_id: str, token: int, note: str = "released") -> Task:
    """Give a task back without counting an attempt (the worker is shutting down)."""
    task = load_held(task_id, worker_id, token)
    with sqlite.atomic():
        released = prepare_move(
            task,
            Status.IN_PROGRESS,
            actor=actors.worker(worker_id),
            note=note,
            event="released",
            held=(worker_id, token),
            status=Status.PENDING,
            worker_id=None,
            lease_expires_at=None,
        )
        apply_move(released)
        release_worker_slot(worker_id)
    return task


def requeue_expired(*, now: datetime | None = None, limit: int = 100) -> int:
    """Count each expired lease as a failed attempt of type `lease_expired`."""
    now = now or timezone.now()
    ids = list(Task.objects.expired_leases(now).values_list("pk", flat=True)[:limit])
    done = 0
    for task_id in ids:
        with sqlite.atomic():
            task = load(task_id)
            if task.status != Status.IN_PROGRESS or not task.lease_expires_at:
                continue
            if task.lease_expires_at >= now:
                continue
            held_by = task.worker_id or "?"
            record_failure(
                task,
                "lease_expired",
                f"lease held by {held_by} expired at {task.lease_expires_at.isoformat()}",
                actor=actors.SYSTEM,
            )
            done += 1
    return done


def backoff(attempt: int) -> timedelta:
    """Exponential backoff with jitter, so failing tasks don't retry in lock-step."""
    base = settings.VIBE_RETRY_BASE_SECONDS * (2 ** max(attempt - 1, 0))
    delay = min(settings.VIBE_RETRY_MAX_SECONDS, base) * random.uniform(0.5, 1.0)
    return timedelta(seconds=delay)
