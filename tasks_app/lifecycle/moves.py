"""The compare-and-swap every status change makes, its history row, and what follows a change.

Two idioms, one per speed: people's moves (approve, retry, cancel, delivery…) use `move`, the
ORM's compare-and-swap; the workers' claim → complete path builds its statements with
`prepare_move` before the transaction and runs them with `apply_move` (`_sql`, measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from .. import signals
from ..choices import Status
from ..models import Task, TaskHistory
from ._sql import GIVE_SLOT_BACK_SQL, HISTORY_SQL, statements, update_sql
from .errors import IllegalTransition, TaskNotFound, lease_lost, status_label
from .intake import task_id as checked_task_id

WAKE_CHANNEL = "vibe_tasks"
# Statuses that stop where a person must act: people hear of each.
_ATTENTION = (Status.DEAD_LETTER, Status.BLOCKED, Status.AWAITING_APPROVAL)


def load(task_id: int | str, *, lock: bool = True) -> Task:
    """The task, its row locked on PostgreSQL when `lock` (inside the move's transaction)."""
    pk = checked_task_id(task_id)
    tasks = (
        Task.objects.select_for_update() if lock and connection.in_atomic_block else Task.objects
    )
    try:
        return tasks.get(pk=pk)
    except Task.DoesNotExist:
        raise TaskNotFound(f"task {pk} does not exist") from None


def move(
    task: Task,
    expected: str | Sequence[str],
    *,
    actor: str,
    note: str = "",
    event: str = "",
    notify: str = "",
    **fields,
) -> Task:
    """Compare-and-swap `task` from `expected` to `status=`; write its history row.

    `event` names the move in its history row (the status moved to, by default).
    """
    expected_list = [expected] if isinstance(expected, str) else list(expected)
    fields["updated_at"] = timezone.now()
    changed = Task.objects.filter(pk=task.pk, status__in=expected_list).update(**fields)
    if changed != 1:
        current = Task.objects.filter(pk=task.pk).values_list("status", flat=True).first()
        raise IllegalTransition(
            f"task {task.pk} changed while you acted (it is now {status_label(current or '?')});"
            " nothing was done"
        )
    TaskHistory.objects.create(
        task=task,
        from_status=task.status,
        to_status=fields["status"],
        actor=actor,
        note=note,
        event=event or fields["status"],
        error_type=fields.get("last_error_type", ""),
    )
    return finish(task, fields, note, notify)


@dataclass
class Move:
    """A status change with its statements built, ready to run in a transaction."""

    db: BaseDatabaseWrapper
    task: Task
    held: tuple[str, int] | None
    fields: dict
    note: str
    update: tuple[str, list]
    history: list
    notify: str = ""  # an event to tell people about, beyond what the status itself tells


def prepare_move(
    task: Task,
    expected: str,
    *,
    actor: str,
    note: str = "",
    event: str = "",
    held: tuple[str, int] | None = None,
    notify: str = "",
    **fields,
) -> Move:
    """A worker's move, its statements built before the transaction so the writers' queue is
    held for the statements alone. With `held=(worker id, claim token)` the move also needs
    that claim to still hold the task. The time of the change (`updated_at`, the history row)
    is filled in by `apply_move`, inside the transaction."""
    db = transaction.get_connection()
    fields.pop("updated_at", None)
    fields["updated_at"] = None  # last, so its parameter is the last of the SET list
    update = update_sql(db, task.pk, [expected], fields, held)
    status = str(fields["status"])
    error_type = str(fields.get("last_error_type", ""))
    history = [task.pk, str(task.status), status, actor, note, event or status, error_type, None]
    return Move(db, task, held, fields, note, update, history, notify)


def apply_move(move: Move) -> Task:
    """Run a prepared move: the compare-and-swap, then its history row; LeaseLost when the
    claim no longer holds the task."""
    task, db = move.task, move.db
    now = timezone.now()
    sql, params = move.update
    params[len(move.fields) - 1] = move.history[-1] = db.ops.adapt_datetimefield_value(now)
    move.fields["updated_at"] = now
    with statements(db) as cursor:
        changed = cursor.execute(sql, params).rowcount
        if changed == 1:
            cursor.execute(HISTORY_SQL, move.history)
    if changed != 1:
        current = Task.objects.filter(pk=task.pk).values_list("status", flat=True).first()
        if move.held:
            raise lease_lost(task.pk, move.held[0], current)
        raise IllegalTransition(
            f"task {task.pk} changed while you acted (it is now {status_label(current or '?')});"
            " nothing was done"
        )
    return finish(task, move.fields, move.note, move.notify)


def finish(task: Task, fields: dict, note: str, notify: str = "") -> Task:
    """After a move's write: the instance catches up, idle workers wake, people hear."""
    for name, value in fields.items():
        setattr(task, name, value)
    after_status(task, fields["status"], note)
    if notify:
        notify_people(task, notify, note)
    return task


def after_status(task: Task, status: str, note: str) -> None:
    if status == Status.PENDING:
        wake_workers(task.lane)
    elif status in _ATTENTION:
        notify_people(task, status, note)


def wake_workers(lane: str) -> None:
    """Wake idle workers of the lane at commit (PostgreSQL NOTIFY is transactional)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [WAKE_CHANNEL, lane])


def _waiting_on(task: Task) -> str:
    """Who waits for this task, when it stops where it cannot finish without a person."""
    ids = list(
        task.dependents.filter(status__in=(Status.PENDING, Status.AWAITING_APPROVAL))
        .order_by("pk")
        .values_list("pk", flat=True)[:11]
    )
    if not ids:
        return ""
    shown = ", ".join(f"#{pk}" for pk in ids[:10]) + (" and more" if len(ids) > 10 else "")
    return f"; {len(ids) if len(ids) <= 10 else 'over 10'} task(s) wait for it: {shown}"


def notify_people(task: Task, event: str, note: str) -> None:
    """Tell people, inside the move's transaction, so what they hear commits with the move."""
    if event in (Status.DEAD_LETTER, Status.BLOCKED):
        note += _waiting_on(task)
    signals.attention_needed.send(sender=Task, task=task, event=event, note=note)


def release_worker_slot(worker_id: str | None) -> None:
    if worker_id:
        with statements(transaction.get_connection()) as cursor:
            cursor.execute(GIVE_SLOT_BACK_SQL, [worker_id])
