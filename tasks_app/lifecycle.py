"""Every status change of a task or a worker, in one place.

Admin actions, kanban buttons, Slack, Discord, the CLI and the workers all call these functions,
so each change behaves the same from every front door. Each function:

- writes in one transaction (IMMEDIATE on SQLite, so writers queue instead of failing); what
  it reads and checks before that transaction, the write checks again;
- moves the row with a compare-and-swap on the status it expects, so a double click or two racing
  workers change the task once and the loser gets a clear `LifecycleError`;
- writes exactly one `TaskHistory` row per change, with the acting front door as `actor`;
- writes outbox rows (notifications) in the same transaction, so none is lost.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy timeout alone
    fcntl = None

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.utils import timezone

from . import pipeline
from .choices import OPEN_STATUSES, WAITING_DELIVERY, Delivery, DeliveryState, Lane, Risk, Status
from .models import Task, TaskHistory
from .verdicts import VerdictError, validate_result

logger = logging.getLogger(__name__)

WAKE_CHANNEL = "vibe_tasks"
CANCEL_CHANNEL = "vibe_cancels"  # the id of a cancelled running task, for its worker's keeper
MAX_GOAL_LENGTH = 10_000
MAX_ERROR_LENGTH = 20_000


# --- Errors -----------------------------------------------------------------------------------


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


# --- Error types --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorType:
    retryable: bool
    hint: str
    # Infrastructure and configuration faults are the worker's, not the task's: they count
    # towards its circuit breaker (VIBE_WORKER_FAILURE_LIMIT), which gives their attempts back.
    infrastructure: bool = False
    # A failure a person must look at before more money is spent: blocked, not retried.
    blocks: bool = False


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
}
INFRASTRUCTURE_ERRORS = frozenset(n for n, t in ERROR_TYPES.items() if t.infrastructure)


def error_hint(error_type: str) -> str:
    known = ERROR_TYPES.get(error_type)
    return known.hint if known else ""


# --- Helpers ----------------------------------------------------------------------------------


def _check_actor(actor: str) -> str:
    if not actor or not isinstance(actor, str):
        raise InvalidInput("every change needs an actor, such as 'user:alice' or 'cli'")
    return actor[:200]


def _worker_actor(worker_id: str) -> str:
    return f"worker:{worker_id}"


# --- Hand-written SQL for the hot path ----------------------------------------------------------
# A worker's claim→complete runs many times a second; building these statements with the ORM
# cost about ten times more than running them (bench/claims.py). The SQL below is plain and
# runs unchanged on SQLite and PostgreSQL; rows still pass through the model fields' own
# converters, so callers get ordinary Task instances. Status literals (not parameters) let
# SQLite prove the partial index `tasks_claimable_idx` applies.

_TASKS = Task._meta.db_table
_CLAIMABLE_SQL = (
    f"WHERE {_TASKS}.status = 'pending' AND {_TASKS}.lane = %s"
    f" AND ({_TASKS}.not_before IS NULL OR {_TASKS}.not_before <= %s)"
    f" AND NOT EXISTS (SELECT 1 FROM {Task.depends_on.through._meta.db_table} dep"
    f" JOIN {_TASKS} pre ON pre.id = dep.to_task_id"
    f" WHERE dep.from_task_id = {_TASKS}.id AND pre.status <> 'completed')"
    f" ORDER BY {_TASKS}.priority DESC, {_TASKS}.created_at, {_TASKS}.id LIMIT 1"
)
# Whether the worker may claim and its lane has a pending task past its backoff (a cheap read).
_MAY_CLAIM_SQL = (
    "SELECT w.status = 'online' AND w.active_tasks < w.capacity_limit AND EXISTS ("
    f"SELECT 1 FROM {_TASKS} WHERE {_TASKS}.status = 'pending' AND {_TASKS}.lane = w.lane"
    f" AND ({_TASKS}.not_before IS NULL OR {_TASKS}.not_before <= %s))"
    " FROM worker_health w WHERE w.worker_id = %s"
)
_task_columns_by_vendor: dict[str, tuple[str, str, list[str], list[tuple]]] = {}


def _task_columns(db) -> tuple[str, str, list[str], list[tuple]]:
    """A whole Task's SELECT list, its RETURNING list, attribute names and column converters."""
    cached = _task_columns_by_vendor.get(db.vendor)
    if cached is None:
        fields = Task._meta.concrete_fields
        select = ", ".join(f"{_TASKS}.{db.ops.quote_name(f.column)}" for f in fields)
        returning = ", ".join(db.ops.quote_name(f.column) for f in fields)
        converters = []
        for field in fields:
            col = field.get_col(_TASKS)
            funcs = db.ops.get_db_converters(col) + col.get_db_converters(db)
            converters.append((col, funcs))
        cached = (select, returning, [f.attname for f in fields], converters)
        _task_columns_by_vendor[db.vendor] = cached
    return cached


def _task_from_row(db, row: Sequence) -> Task:
    """A Task from a row of `_task_columns`, through each field's own converters."""
    _select, _returning, attnames, converters = _task_columns(db)
    values = []
    for value, (col, funcs) in zip(row, converters, strict=True):
        for func in funcs:
            value = func(value, col, db)
        values.append(value)
    return Task.from_db(db.alias, attnames, values)


def _fetch_task(where: str, params: Sequence, *, lock: bool):
    """One Task by hand-written SQL; `lock` takes its row lock on PostgreSQL."""
    db = transaction.get_connection()
    select = _task_columns(db)[0]
    sql = f"SELECT {select} FROM {_TASKS} {where}"
    if lock and db.features.has_select_for_update:
        sql += " FOR UPDATE"
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else _task_from_row(db, row)


_ID_COLUMN = [f.attname for f in Task._meta.concrete_fields].index("id")
# Claim a slot of the worker's capacity: exact, because the row is re-checked as it is written.
_TAKE_SLOT_SQL = (
    "UPDATE worker_health SET active_tasks = active_tasks + 1"
    " WHERE worker_id = %s AND status = 'online' AND active_tasks < capacity_limit"
    " RETURNING lane"
)
_GIVE_SLOT_BACK_SQL = (
    "UPDATE worker_health SET active_tasks = active_tasks - 1"
    " WHERE worker_id = %s AND active_tasks > 0"
)
_claim_sql_by_vendor: dict[str, str] = {}


def _claim_sql(db) -> str:
    """Pick the next claimable task of a lane and take it, in one statement."""
    sql = _claim_sql_by_vendor.get(db.vendor)
    if sql is None:
        skip = " FOR UPDATE SKIP LOCKED" if db.features.has_select_for_update_skip_locked else ""
        sql = (
            f"UPDATE {_TASKS} SET status = 'in_progress', worker_id = %s,"
            " lease_expires_at = %s, claim_token = claim_token + 1, started_at = %s,"
            " not_before = NULL, finished_at = NULL, updated_at = %s"
            f" WHERE id = (SELECT {_TASKS}.id FROM {_TASKS} {_CLAIMABLE_SQL}{skip})"
            f" AND status = 'pending' RETURNING {_task_columns(db)[1]}"
        )
        _claim_sql_by_vendor[db.vendor] = sql
    return sql


@contextmanager
def _statements(db) -> Iterator:
    """The database driver's own cursor, for the statements a move runs in its transaction.

    Django's cursor wrapper costs about ten times what one of these small statements does
    (30 µs against 3 µs on the bench machine), and on SQLite that time is spent holding the
    writers' queue. Statements are written with %s and run here with the driver's own
    placeholders; errors still come out as Django's.
    """
    db.ensure_connection()
    with db.wrap_database_errors:
        cursor = db.connection.cursor()
        try:
            yield _DriverCursor(cursor, qmark=db.vendor == "sqlite")
        finally:
            cursor.close()


class _DriverCursor:
    __slots__ = ("cursor", "qmark")

    def __init__(self, cursor, *, qmark: bool) -> None:
        self.cursor, self.qmark = cursor, qmark

    def execute(self, sql: str, params: Sequence = ()) -> _DriverCursor:
        self.cursor.execute(sql.replace("%s", "?") if self.qmark else sql, params)
        return self

    def fetchone(self):
        return self.cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount


_PLAIN_TYPES = (str, int, type(None))
_update_columns: dict[str, tuple[str, object, bool]] = {}


def _update_column(name: str) -> tuple[str, object, bool]:
    """(quoted column, field, whether a plain str/int/None value can skip the field's prep)."""
    if name not in _update_columns:
        field = Task._meta.get_field(name)
        plain = not isinstance(field, models.JSONField | models.DateTimeField)
        quoted = transaction.get_connection().ops.quote_name(field.column)
        _update_columns[name] = (quoted, field, plain)
    return _update_columns[name]


_HISTORY_SQL = (
    f"INSERT INTO {TaskHistory._meta.db_table}"
    " (task_id, from_status, to_status, actor, note, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


def _update_sql(
    db, pk: int, expected: Sequence[str], fields: dict, held: tuple[str, int] | None
) -> tuple[str, list]:
    """UPDATE … WHERE id AND status IN expected (the compare-and-swap), and its parameters.

    `held` is (worker id, claim token): the row changes only while that claim still holds it.
    """
    sets, params = [], []
    for name, value in fields.items():
        column, field, plain = _update_column(name)
        sets.append(f"{column} = %s")
        if plain and type(value) in _PLAIN_TYPES:
            params.append(value)
        else:
            params.append(field.get_db_prep_save(value, db))
    marks = ", ".join(["%s"] * len(expected))
    sql = f"UPDATE {_TASKS} SET {', '.join(sets)} WHERE id = %s AND status IN ({marks})"
    params += [pk, *expected]
    if held:
        sql += " AND worker_id = %s AND claim_token = %s"
        params += list(held)
    return sql, params


_writer_queue = threading.local()


class _Handles(dict):
    """One thread's lock-file handles, closed when the thread ends and its locals go: a server
    that starts a thread per request (runserver) would otherwise leak one per request until it
    ran out of file descriptors."""

    def __del__(self) -> None:
        for fd in self.values():
            if fd is not None:
                with suppress(OSError):  # already closed
                    os.close(fd)


def _writer_queue_fd(path: str) -> int | None:
    """This thread's handle on the lock file beside the SQLite database (one per thread, so
    threads of one process queue like processes do)."""
    handles = _writer_queue.__dict__.setdefault("handles", _Handles())
    if _writer_queue.__dict__.setdefault("pid", os.getpid()) != os.getpid():
        # A forked child shares its parent's open file, and with it the parent's lock: reopen.
        for fd in handles.values():
            if fd is not None:
                os.close(fd)  # the parent keeps its own handle, and its lock
        handles.clear()
        _writer_queue.pid = os.getpid()
    if path not in handles:
        try:
            handles[path] = os.open(f"{path}-writers", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            handles[path] = None  # read-only folder: fall back to SQLite's busy timeout alone
    return handles[path]


@contextmanager
def _atomic() -> Iterator[None]:
    """`transaction.atomic()`, with SQLite writers waiting in a queue rather than asleep.

    SQLite lets one writer in at a time and makes the others retry after growing sleeps, so
    with several busy workers the lock often sits free while every waiter sleeps (four workers
    ran at 0.28× the rate of one in bench/claims.py). An exclusive `flock` on a file beside
    the database makes our writers wait in the kernel, which hands the lock to the next one at
    once. It is only a queue: correctness still rests on SQLite's own lock, so writers that do
    not take it (the admin, an outer transaction) are merely slower, never unsafe. Inside an
    outer atomic block the transaction, and SQLite's write lock, already started, so waiting
    here could only deadlock; the queue is skipped.
    """
    conn = transaction.get_connection()
    name = str(conn.settings_dict.get("NAME") or "")
    if (
        fcntl is None
        or conn.vendor != "sqlite"
        or conn.in_atomic_block
        or conn.is_in_memory_db()
        or not name
    ):
        with transaction.atomic():
            yield
        return
    fd = _writer_queue_fd(name)
    if fd is None:
        with transaction.atomic():
            yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with transaction.atomic():
            yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    _checkpoint_now_and_then(conn)


def _checkpoint_now_and_then(conn) -> None:
    """Fold the WAL back into the database every CHECKPOINT_EVERY commits, outside the queue.

    SQLite's own automatic checkpoint runs inside the committing transaction, so it would hold
    the writers' queue through its fsyncs (half of all time spent in the queue on a slow disk).
    A PASSIVE checkpoint needs no write lock: run here, after the queue has moved on, it lets
    the other writers carry on. `wal_autocheckpoint` stays set, higher, as a safety net for
    writes that do not come through the lifecycle.
    """
    commits = _writer_queue.__dict__.get("commits", 0) + 1
    if commits < settings.VIBE_SQLITE_CHECKPOINT_EVERY:
        _writer_queue.commits = commits
        return
    _writer_queue.commits = 0
    try:
        with conn.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.fetchall()
    except DatabaseError as exc:
        # The move has committed: its caller must not hear of a failure. The next checkpoint
        # (or SQLite's own) folds in what this one could not.
        logger.warning("WAL checkpoint skipped: %s", exc)


def _load(task_id: int | str, *, lock: bool = True) -> Task:
    try:
        pk = int(task_id)
    except (TypeError, ValueError):
        raise TaskNotFound(f"{task_id!r} is not a task id; task ids are whole numbers") from None
    if not -(2**63) <= pk < 2**63:
        raise TaskNotFound(f"task {pk} does not exist")
    task = _fetch_task(f"WHERE {_TASKS}.id = %s", [pk], lock=lock)
    if task is None:
        raise TaskNotFound(f"task {pk} does not exist")
    return task


def _status_label(status: str) -> str:
    return Status(status).label.lower() if status in Status.values else status


def _illegal(task: Task, action: str, allowed: Sequence[str]) -> IllegalTransition:
    names = " or ".join(_status_label(s) for s in allowed)
    return IllegalTransition(
        f"task {task.pk} is {_status_label(task.status)}; only {names} tasks can be {action}"
    )


@dataclass
class _Move:
    """A status change with its statements built, ready to run in a transaction."""

    db: object
    task: Task
    held: tuple[str, int] | None
    fields: dict
    note: str
    update: tuple[str, list]
    history: list
    notify: str = ""  # an event to tell people about, beyond what the status itself tells


def _prepare_move(
    task: Task,
    expected: str | Sequence[str],
    *,
    actor: str,
    note: str = "",
    held: tuple[str, int] | None = None,
    notify: str = "",
    **fields,
) -> _Move:
    """Build a move's statements; the hot paths do this before their transaction, so the
    writers' queue is held for the statements alone. The time of the change (`updated_at`,
    the history row) is filled in by `_apply_move`, inside the transaction."""
    expected_list = [expected] if isinstance(expected, str) else list(expected)
    db = transaction.get_connection()
    fields.pop("updated_at", None)
    fields["updated_at"] = None  # last, so its parameter is the last of the SET list
    update = _update_sql(db, task.pk, expected_list, fields, held)
    history = [task.pk, str(task.status), str(fields["status"]), actor, note, None]
    return _Move(db, task, held, fields, note, update, history, notify)


def _apply_move(move: _Move) -> Task:
    """Run a prepared move: the compare-and-swap, then its history row."""
    task, db = move.task, move.db
    now = timezone.now()
    sql, params = move.update
    params[len(move.fields) - 1] = move.history[-1] = db.ops.adapt_datetimefield_value(now)
    move.fields["updated_at"] = now
    with _statements(db) as cursor:
        changed = cursor.execute(sql, params).rowcount
        if changed == 1:
            cursor.execute(_HISTORY_SQL, move.history)
    if changed != 1:
        current = Task.objects.filter(pk=task.pk).values_list("status", flat=True).first()
        if move.held:
            raise _lease_lost(task.pk, move.held[0], current)
        raise IllegalTransition(
            f"task {task.pk} changed while you acted (it is now {_status_label(current or '?')});"
            " nothing was done"
        )
    for name, value in move.fields.items():
        setattr(task, name, value)
    _after_status(task, move.fields["status"], move.note)
    if move.notify:
        _notify_people(task, move.notify, move.note)
    return task


def _move(task: Task, expected: str | Sequence[str], **kwargs) -> Task:
    """Compare-and-swap `task` from `expected` to `status=`; write its history row.

    With `held=(worker id, claim token)` the move also needs that claim to still hold the task,
    and raises LeaseLost when it does not.
    """
    return _apply_move(_prepare_move(task, expected, **kwargs))


def _after_status(task: Task, status: str, note: str) -> None:
    if status == Status.PENDING:
        _wake_workers(task.lane)
    elif status in (Status.DEAD_LETTER, Status.BLOCKED, Status.AWAITING_APPROVAL):
        _notify_people(task, status, note)


def _wake_workers(lane: str) -> None:
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


def _notify_people(task: Task, event: str, note: str) -> None:
    from chatops_app.models import Notification, Platform

    if event in (Status.DEAD_LETTER, Status.BLOCKED):
        note += _waiting_on(task)
    Notification.objects.bulk_create(
        [Notification(task=task, event=event, channel=p, note=note[:2000]) for p in Platform]
    )


def _backoff(attempt: int) -> timedelta:
    """Exponential backoff with jitter, so failing tasks don't retry in lock-step."""
    base = settings.VIBE_RETRY_BASE_SECONDS * (2 ** max(attempt - 1, 0))
    delay = min(settings.VIBE_RETRY_MAX_SECONDS, base) * random.uniform(0.5, 1.0)
    return timedelta(seconds=delay)


def _release_worker_slot(worker_id: str | None) -> None:
    if worker_id:
        with _statements(transaction.get_connection()) as cursor:
            cursor.execute(_GIVE_SLOT_BACK_SQL, [worker_id])


# --- Submitting and approving -----------------------------------------------------------------


@dataclass
class NewTask:
    goal: str
    lane: str
    priority: int = 50
    risk: str = Risk.LOW
    depends_on: Sequence[int] = ()
    pipeline: str | None = None
    max_attempts: int | None = None
    delivery: str | None = None
    github_issue: str = ""
    key: str = ""  # an idempotency key: the same key again is the same task


MAX_KEY_LENGTH = 200


def validate_new(spec: NewTask) -> NewTask:
    goal = (spec.goal or "").strip() if isinstance(spec.goal, str) else ""
    if not goal:
        raise InvalidInput("the goal is empty; say what the task should achieve")
    if len(goal) > MAX_GOAL_LENGTH:
        raise InvalidInput(f"the goal is {len(goal)} characters; the limit is {MAX_GOAL_LENGTH}")
    _check_storable(goal, "the goal")
    if spec.lane not in Lane.values:
        raise InvalidInput(f"unknown lane {spec.lane!r}; choose one of {', '.join(Lane.values)}")
    if spec.risk not in Risk.values:
        raise InvalidInput(f"unknown risk {spec.risk!r}; choose one of {', '.join(Risk.values)}")
    if isinstance(spec.priority, bool) or not isinstance(spec.priority, int):
        raise InvalidInput(f"priority must be a whole number, not {spec.priority!r}")
    if not 0 <= spec.priority <= 100:
        raise InvalidInput(f"priority {spec.priority} is out of range; use 0 to 100")
    max_attempts = spec.max_attempts or settings.VIBE_MAX_ATTEMPTS
    if max_attempts < 1:
        raise InvalidInput("max_attempts must be at least 1")
    try:
        depends_on = [int(pk) for pk in spec.depends_on or ()]
    except (TypeError, ValueError):
        raise InvalidInput(
            f"prerequisites must be task ids (whole numbers), not {list(spec.depends_on)!r}"
        ) from None
    for pk in depends_on:
        if not 1 <= pk < 2**63:  # beyond the id column: no such task (and no OverflowError)
            raise InvalidInput(f"task {pk} does not exist (named as a prerequisite)")
    try:
        chosen = pipeline.pipeline_for(spec.lane, spec.pipeline)
        delivery = pipeline.delivery_for(chosen, spec.delivery)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return NewTask(
        goal=goal,
        lane=spec.lane,
        priority=spec.priority,
        risk=spec.risk,
        depends_on=depends_on,
        pipeline=chosen,
        max_attempts=max_attempts,
        delivery=delivery,
        github_issue=str(spec.github_issue or "")[:300],
        key=_checked_key(spec.key),
    )


def _check_storable(text: str, what: str) -> None:
    """Text every database can hold: PostgreSQL refuses NUL, neither encodes a lone surrogate."""
    if "\x00" in text:
        raise InvalidInput(f"{what} holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode text (a lone surrogate)") from None


def _checked_key(key: object) -> str:
    key = (key or "").strip() if isinstance(key, str) else ""
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"the idempotency key is {len(key)} characters; the limit is 200")
    _check_storable(key, "the idempotency key")
    return key


def _create(spec: NewTask, *, actor: str) -> Task:
    if spec.key:
        earlier = Task.objects.filter(idempotency_key=spec.key).first()
        if earlier is not None:
            earlier.was_submitted_before = True  # type: ignore[attr-defined]
            return earlier
    status = Status.AWAITING_APPROVAL if spec.risk == Risk.HIGH else Status.PENDING
    task = Task.objects.create(
        idempotency_key=spec.key,
        goal=spec.goal,
        lane=spec.lane,
        priority=spec.priority,
        risk=spec.risk,
        pipeline=spec.pipeline or "none",
        max_attempts=spec.max_attempts,
        status=status,
        delivery=spec.delivery or Delivery.BRANCH,
        github_issue=spec.github_issue,
    )
    if spec.depends_on:
        ids = {int(i) for i in spec.depends_on}
        found = dict(Task.objects.filter(pk__in=ids).values_list("pk", "status"))
        missing = sorted(ids - set(found))
        if missing:
            raise TaskNotFound(f"task {missing[0]} does not exist (named in --after)")
        cancelled = sorted(pk for pk, status in found.items() if status == Status.CANCELLED)
        if cancelled:
            raise InvalidInput(
                f"task {cancelled[0]} is cancelled and will never complete, so nothing can wait "
                "for it (named in --after)"
            )
        task.depends_on.set(ids)
    note = "submitted" if status == Status.PENDING else "submitted; high risk, awaiting approval"
    TaskHistory.objects.create(task=task, from_status="", to_status=status, actor=actor, note=note)
    _after_status(task, status, note)
    return task


def submit(
    goal: str,
    *,
    lane: str,
    actor: str,
    priority: int = 50,
    risk: str = Risk.LOW,
    depends_on: Sequence[int] = (),
    pipeline: str | None = None,
    max_attempts: int | None = None,
    delivery: str | None = None,
    github_issue: str = "",
    key: str = "",
) -> Task:
    """New work: `pending`, or `awaiting_approval` when its risk is high.

    With an idempotency `key` already used, nothing is made: the earlier task is returned, its
    `was_submitted_before` set, so a retried submission never makes the work twice.
    """
    actor = _check_actor(actor)
    spec = validate_new(
        NewTask(
            goal,
            lane,
            priority,
            risk,
            depends_on,
            pipeline,
            max_attempts,
            delivery,
            github_issue,
            key,
        )
    )
    try:
        with _atomic():
            return _create(spec, actor=actor)
    except IntegrityError:
        # Another process submitted the same key between our look and our insert.
        earlier = Task.objects.filter(idempotency_key=spec.key).first() if spec.key else None
        if earlier is None:
            raise
        earlier.was_submitted_before = True  # type: ignore[attr-defined]
        return earlier


def submit_many(
    specs: Iterable[NewTask],
    *,
    actor: str,
    progress: Callable[[int, int], None] | None = None,
) -> list[Task]:
    """All or nothing: every spec is validated before the first row is written."""
    actor = _check_actor(actor)
    validated = []
    for number, spec in enumerate(specs, start=1):
        try:
            validated.append(validate_new(spec))
        except InvalidInput as exc:
            raise InvalidInput(f"item {number}: {exc}") from None
    created = []
    with _atomic():
        for spec in validated:
            created.append(_create(spec, actor=actor))
            if progress:
                progress(len(created), len(validated))
    return created


def approve(task_id: int | str, *, actor: str) -> Task:
    actor = _check_actor(actor)
    with _atomic():
        task = _load(task_id)
        if task.status != Status.AWAITING_APPROVAL:
            raise _illegal(task, "approved", [Status.AWAITING_APPROVAL])
        now = timezone.now()
        return _move(
            task,
            Status.AWAITING_APPROVAL,
            actor=actor,
            note="approved",
            status=Status.PENDING,
            approved_by=actor,
            approved_at=now,
        )


EDITABLE = (Status.PENDING, Status.AWAITING_APPROVAL, Status.BLOCKED, Status.DEAD_LETTER)


def edit(
    task_id: int | str, *, actor: str, goal: str | None = None, priority: int | None = None
) -> Task:
    """A person changes what the work is (goal) or how urgent (priority), with a history row.

    An approval covers the goal that was approved: a new goal for a high-risk or approved task
    sends it back for approval. Running and finished work cannot be edited.
    """
    actor = _check_actor(actor)
    with _atomic():
        task = _load(task_id)
        if task.status not in EDITABLE:
            raise _illegal(task, "edited", EDITABLE)
        spec = validate_new(
            NewTask(
                goal if goal is not None else task.goal,
                task.lane,
                priority if priority is not None else task.priority,
                task.risk,
                pipeline=task.pipeline,
                delivery=task.delivery,
            )
        )
        fields: dict = {}
        said = []
        if spec.goal != task.goal:
            fields["goal"] = spec.goal
            said.append(f"goal {task.goal[:300]!r} → {spec.goal[:300]!r}")
        if spec.priority != task.priority:
            fields["priority"] = spec.priority
            said.append(f"priority {task.priority} → {spec.priority}")
        if not fields:
            return task
        status = task.status
        if "goal" in fields and (task.risk == Risk.HIGH or task.approved_by):
            status = Status.AWAITING_APPROVAL  # the approval was for the old goal
            fields.update(approved_by="", approved_at=None)
            said.append("needs approval again")
        return _move(
            task,
            task.status,
            actor=actor,
            note=("edited: " + "; ".join(said))[:2000],
            status=status,
            **fields,
        )


# --- Claiming and running (the workers' side) -------------------------------------------------


def claim_next(worker, *, lease_seconds: int | None = None) -> Task | None:
    """Atomically take the most urgent claimable task of the worker's lane, or None.

    The worker's slot is taken first, by an UPDATE that re-checks status and capacity as it
    writes, so `active_tasks` never passes `capacity_limit` however many processes drive one
    worker; on PostgreSQL the task row is taken with SKIP LOCKED so workers of one lane never
    wait on each other.
    """
    from workers_app.models import Worker

    worker_id = worker.pk if isinstance(worker, Worker) else str(worker)
    lease = timedelta(seconds=lease_seconds or settings.VIBE_LEASE_SECONDS)
    if connection.vendor == "sqlite" and not connection.in_atomic_block:
        # SQLite has one write lock for the whole file: an idle worker that polls must not
        # take it just to find nothing. A plain read (never blocked in WAL mode) answers
        # that; the transaction below checks everything again before claiming.
        with connection.cursor() as cursor:
            cursor.execute(
                _MAY_CLAIM_SQL,
                [connection.ops.adapt_datetimefield_value(timezone.now()), worker_id],
            )
            row = cursor.fetchone()
        if row is None:
            raise WorkerNotFound(f"worker {worker_id} does not exist")
        if not row[0]:
            return None
    claim = _Claim(worker_id, lease)
    with _atomic():
        row = claim.take()
    return None if row is None else _task_from_row(transaction.get_connection(), row)


class _Claim:
    """A claim's statements, built before the transaction and run inside it by `take`."""

    def __init__(self, worker_id: str, lease: timedelta) -> None:
        self.db = transaction.get_connection()
        self.worker_id = worker_id
        self.sql = _claim_sql(self.db)
        self.actor, self.note = _worker_actor(worker_id), f"claimed by {worker_id}"
        # The lease may start a moment before the claim (the wait in the queue): it only
        # errs on the safe side, by milliseconds.
        self.lease_expires_at = self.db.ops.adapt_datetimefield_value(timezone.now() + lease)

    def take(self, *, missing_ok: bool = False):
        """The claimed row, or None. Nothing is left to undo when there is nothing to claim
        (the slot is handed back in the same transaction), so a caller may run this after
        writes of its own."""
        with _statements(self.db) as cursor:
            slot = cursor.execute(_TAKE_SLOT_SQL, [self.worker_id]).fetchone()
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
                cursor.execute(_GIVE_SLOT_BACK_SQL, [self.worker_id])
                return None
            history = [row[_ID_COLUMN], Status.PENDING.value, Status.IN_PROGRESS.value]
            cursor.execute(_HISTORY_SQL, [*history, self.actor, self.note, stamp])
        return row


def _lease_lost(task_id: int, worker_id: str, status: str | None) -> LeaseLost:
    return LeaseLost(
        f"task {task_id} is no longer held by {worker_id} (it is "
        f"{_status_label(status or '?')}); its result was not recorded"
    )


def _load_held(task_id: int, worker_id: str, token: int) -> Task:
    """The task as its worker last left it, read without a lock: while the claim holds, only
    the holder changes it, and every write of the holder re-checks the claim (`held=`)."""
    task = _load(task_id, lock=False)
    if (
        task.status != Status.IN_PROGRESS
        or task.worker_id != worker_id
        or task.claim_token != token
    ):
        raise _lease_lost(task.pk, worker_id, task.status)
    return task


def heartbeat(task_id: int, *, worker_id: str, token: int, lease_seconds: int | None = None):
    """Extend a running task's lease; raises LeaseLost when the worker lost it."""
    lease = timedelta(seconds=lease_seconds or settings.VIBE_LEASE_SECONDS)
    now = timezone.now()
    with _atomic():  # in the SQLite writers' queue, so busy claimers never starve it
        changed = Task.objects.filter(
            pk=task_id, status=Status.IN_PROGRESS, worker_id=worker_id, claim_token=token
        ).update(lease_expires_at=now + lease)
    if changed != 1:
        raise LeaseLost(f"task {task_id} is no longer held by {worker_id}")


MAX_CHANGED_FILES = 2000


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

    move: _Move
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
    task = _load_held(task_id, worker_id, token)
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
        delivery, note, notify = _delivery_step(task, passed="completed")
        fields.update(delivery)
    move = _prepare_move(
        task,
        Status.IN_PROGRESS,
        actor=_worker_actor(worker_id),
        note=note,
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
        _load(task.parent_id)
    _apply_move(done.move)
    if done.spawns_reviews:
        _spawn_reviews(task, 0)
    _release_worker_slot(done.worker_id)
    if task.is_review and task.parent_id:
        if done.conflicts is not None:  # the reviewer's check of the work against its base
            Task.objects.filter(pk=task.parent_id).update(conflicts=done.conflicts)
        _after_review(task.parent_id, actor=_worker_actor(done.worker_id))


def complete(task_id: int, *, worker_id: str, token: int, result: dict | None = None) -> Task:
    """The agent finished. Reviews record their verdict; building work goes on to review."""
    done = _prepare_completion(task_id, worker_id, token, result)
    with _atomic():
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
    claim = _Claim(worker_id, lease)
    with _atomic():
        _write_completion(done)
        row = claim.take(missing_ok=True)
    following = None if row is None else _task_from_row(transaction.get_connection(), row)
    return done.move.task, following


def _sentence_case(label: str) -> str:
    """'security audit' → 'Security audit', but 'QA' stays 'QA' (str.capitalize would not)."""
    return label[:1].upper() + label[1:]


def _spawn_reviews(task: Task, step_index: int) -> None:
    step = pipeline.steps(task.pipeline)[step_index]
    for lane in step.lanes:
        review = Task.objects.create(
            goal=f"{_sentence_case(pipeline.REVIEW_LABELS.get(lane, lane))} of task #{task.pk}: "
            f"{task.goal}"[:MAX_GOAL_LENGTH],
            lane=lane,
            priority=min(100, task.priority + 1),
            risk=Risk.LOW,
            status=Status.PENDING,
            parent=task,
            stage=step.stage,
            pipeline="none",
            pipeline_step=step_index,
            review_round=task.review_round,
            max_attempts=task.max_attempts,
            branch=task.branch,
            head_commit=task.head_commit,
        )
        TaskHistory.objects.create(
            task=review,
            from_status="",
            to_status=Status.PENDING,
            actor="system",
            note=f"spawned by the pipeline for task #{task.pk} (round {task.review_round + 1})",
        )
        _wake_workers(lane)


def _after_review(parent_id: int, *, actor: str) -> None:
    """Decide the reviewed work's next status once every review of its current step is in."""
    parent = _load(parent_id)
    if parent.status != Status.REVIEW_NEEDED:
        return  # cancelled or moved by a person meanwhile: the review result is kept, no move
    reviews = list(
        parent.children.filter(
            review_round=parent.review_round, pipeline_step=parent.pipeline_step
        ).exclude(status=Status.CANCELLED)
    )
    if any(r.status != Status.COMPLETED for r in reviews):
        return
    failed = [r for r in reviews if r.verdict == "FAIL"]
    steps = pipeline.steps(parent.pipeline)
    if not failed:
        next_step = parent.pipeline_step + 1
        if next_step < len(steps):
            changed = Task.objects.filter(pk=parent.pk, status=Status.REVIEW_NEEDED).update(
                pipeline_step=next_step, updated_at=timezone.now()
            )
            if changed:
                parent.pipeline_step = next_step
                TaskHistory.objects.create(
                    task=parent,
                    from_status=Status.REVIEW_NEEDED,
                    to_status=Status.REVIEW_NEEDED,
                    actor=actor,
                    note=f"{steps[next_step - 1].label} passed; {steps[next_step].label} next",
                )
                _spawn_reviews(parent, next_step)
            return
        delivery, note, notify = _delivery_step(parent, passed="all reviews passed")
        _move(parent, Status.REVIEW_NEEDED, actor=actor, note=note, notify=notify, **delivery)
        return

    findings = []
    for review in failed:
        for finding in review.findings:
            findings.append({**finding, "review_task": review.pk, "reviewer_lane": review.lane})
    labels = ", ".join(f"#{r.pk} ({pipeline.REVIEW_LABELS.get(r.lane, r.lane)})" for r in failed)
    # review_round identifies a round (its reviews carry it); round_base is where the count
    # restarted when a person last retried, so a retried task gets its full rounds again.
    round_base = int((parent.context or {}).get("round_base", 0))
    context = {
        "findings": findings,
        "failed_reviews": [r.pk for r in failed],
        "summaries": [r.result.get("summary", "") for r in failed if r.result],
        "round_base": round_base,
    }
    blockers = [f for r in failed for f in pipeline.blocking_findings(r.lane, r.findings)]
    rounds_used = parent.review_round + 1 - round_base
    if blockers:
        titles = "; ".join(f["title"] for f in blockers)
        note = f"blocked: {blockers[0]['severity']} finding in {labels}: {titles}"
        outcome = {"status": Status.BLOCKED, "last_error_type": "review_blocked"}
        outcome["last_error"] = titles
    elif rounds_used >= pipeline.max_review_rounds():
        note = f"blocked: review failed {rounds_used} rounds (last: {labels}); a person decides"
        outcome = {"status": Status.BLOCKED, "last_error_type": "review_failed"}
        outcome["last_error"] = f"review failed {rounds_used} rounds"
    else:
        note = f"rework: {labels} failed with {len(findings)} finding(s)"
        outcome = {"status": Status.PENDING, "pipeline_step": 0, "worker_id": None}
        outcome["review_round"] = parent.review_round + 1
    _move(parent, Status.REVIEW_NEEDED, actor=actor, note=note, context=context, **outcome)


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
    if error_type not in ERROR_TYPES:
        raise InvalidInput(
            f"unknown error type {error_type!r}; use one of {', '.join(sorted(ERROR_TYPES))}"
        )
    task = _load_held(task_id, worker_id, token)
    with _atomic():
        _record_failure(
            task,
            error_type,
            error,
            actor=_worker_actor(worker_id),
            held=(worker_id, token),
            retry_after=retry_after,
        )
    return task


def _record_failure(
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
    fields = {
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
        delay = _backoff(attempts + (1 if error_type == "rate_limited" else 0))
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
    _move(task, Status.IN_PROGRESS, actor=actor, note=note, held=held, **fields)
    _release_worker_slot(held_by)


def release(task_id: int, *, worker_id: str, token: int, note: str = "released") -> Task:
    """Give a task back without counting an attempt (the worker is shutting down)."""
    task = _load_held(task_id, worker_id, token)
    with _atomic():
        _move(
            task,
            Status.IN_PROGRESS,
            actor=_worker_actor(worker_id),
            note=note,
            held=(worker_id, token),
            status=Status.PENDING,
            worker_id=None,
            lease_expires_at=None,
        )
        _release_worker_slot(worker_id)
    return task


def requeue_expired(*, now: datetime | None = None, limit: int = 100) -> int:
    """Count each expired lease as a failed attempt of type `lease_expired`."""
    now = now or timezone.now()
    ids = list(Task.objects.expired_leases(now).values_list("pk", flat=True)[:limit])
    done = 0
    for task_id in ids:
        with _atomic():
            task = _load(task_id)
            if task.status != Status.IN_PROGRESS or not task.lease_expires_at:
                continue
            if task.lease_expires_at >= now:
                continue
            held_by = task.worker_id or "?"
            _record_failure(
                task,
                "lease_expired",
                f"lease held by {held_by} expired at {task.lease_expires_at.isoformat()}",
                actor="system",
            )
            done += 1
    return done


# --- Delivery -----------------------------------------------------------------------------------
# Once nothing is left to review, the work is delivered the task's way: `branch` is done when the
# branch is pushed (or committed, with no remote); `merge` waits for an Approver's merge;
# `pull_request` waits while the factory opens one, then for GitHub to say it was merged.


def _files_phrase(files: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(files[:limit]) + (
        f" and {len(files) - limit} more" if len(files) > limit else ""
    )
    return f"{len(files)} file{'' if len(files) == 1 else 's'} ({shown})"


def _delivery_step(task: Task, *, passed: str) -> tuple[dict, str, str]:
    """Where finished work goes next: the move's fields, its note, and whom to tell."""
    base = task.base_branch or "its base branch"
    if not task.branch:  # not a git workspace: there is no branch to deliver
        return {"status": Status.COMPLETED, "finished_at": timezone.now()}, passed, ""
    if task.delivery == Delivery.MERGE:
        if task.conflicts:
            state = DeliveryState.CONFLICT
            note = (
                f"{passed}; conflicts with {base} in {_files_phrase(task.conflicts)}: "
                "rebase and rework, or merge by hand"
            )
        else:
            state = DeliveryState.AWAITING_MERGE
            note = f"{passed}; awaiting an Approver's merge into {base}"
        return {"status": Status.REVIEW_NEEDED, "delivery_state": state}, note, "awaiting_merge"
    if task.delivery == Delivery.PULL_REQUEST:
        if task.pr_number and task.pr_state == "open":  # a rework round: its push updated the PR
            note = f"{passed}; pull request #{task.pr_number} updated"
            fields = {
                "status": Status.REVIEW_NEEDED,
                "delivery_state": DeliveryState.AWAITING_MERGE,
            }
            return fields, note, "awaiting_merge"
        if not settings.VIBE_GITHUB_TOKEN:  # nothing would ever open it: say so now
            why = "VIBE_GITHUB_TOKEN is not set, so no pull request can be opened"
            fields = {
                "status": Status.BLOCKED,
                "delivery_state": DeliveryState.FAILED,
                "last_error_type": "pull_request_failed",
                "last_error": f"{why}; set it, then retry",
            }
            return fields, f"{passed}; blocked: {why}", ""
        fields = {"status": Status.REVIEW_NEEDED, "delivery_state": DeliveryState.OPENING_PR}
        return fields, f"{passed}; opening a pull request into {base}", ""
    remote = (task.result or {}).get("remote") if isinstance(task.result, dict) else ""
    if remote:
        state, note = DeliveryState.PUSHED, f"{passed}; branch {task.branch} pushed to {remote}"
    else:
        state, note = DeliveryState.COMMITTED, f"{passed}; committed on branch {task.branch}"
    return (
        {"status": Status.COMPLETED, "finished_at": timezone.now(), "delivery_state": state},
        (note),
        "",
    )


def _load_delivering(task_id: int | str, action: str, states: Sequence[str]) -> Task:
    task = _load(task_id)
    if task.status != Status.REVIEW_NEEDED or task.delivery_state not in states:
        where = DeliveryState(task.delivery_state).label.lower() if task.delivery_state else ""
        now = _status_label(task.status) + (f", {where}" if where else "")
        wanted = " or ".join(DeliveryState(s).label.lower() for s in states)
        raise IllegalTransition(f"task {task.pk} is {now}; only tasks {wanted} can be {action}")
    return task


def pr_opened(task_id: int | str, *, url: str, number: int, actor: str) -> Task:
    """The factory opened the work's pull request; it waits for GitHub to say merged or closed."""
    actor = _check_actor(actor)
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise InvalidInput(f"a pull request number is a whole number above 0, not {number!r}")
    with _atomic():
        task = _load_delivering(task_id, "given a pull request", [DeliveryState.OPENING_PR])
        return _move(
            task,
            Status.REVIEW_NEEDED,
            actor=actor,
            note=f"pull request #{number} opened: {url}"[:2000],
            notify="awaiting_merge",
            status=Status.REVIEW_NEEDED,
            delivery_state=DeliveryState.AWAITING_MERGE,
            pr_url=str(url)[:500],
            pr_number=number,
            pr_state="open",
        )


def delivery_failed(task_id: int | str, *, error: str, actor: str) -> Task:
    """The pull request could not be opened: a person fixes the cause, then retries."""
    actor = _check_actor(actor)
    with _atomic():
        task = _load_delivering(task_id, "failed delivery", [DeliveryState.OPENING_PR])
        return _move(
            task,
            Status.REVIEW_NEEDED,
            actor=actor,
            note=f"blocked: the pull request could not be opened: {error}"[:2000],
            status=Status.BLOCKED,
            delivery_state=DeliveryState.FAILED,
            last_error_type="pull_request_failed",
            last_error=str(error)[:4000],
        )


def merged(task_id: int | str, *, actor: str, merge_commit: str = "", note: str = "") -> Task:
    """The work is in its base branch: merged here (Merge) or on GitHub (its pull request)."""
    actor = _check_actor(actor)
    with _atomic():
        task = _load(task_id)
        waiting = task.status == Status.REVIEW_NEEDED and task.delivery_state in WAITING_DELIVERY
        closed = task.status == Status.BLOCKED and task.delivery_state == DeliveryState.PR_CLOSED
        if not (waiting or closed):
            raise IllegalTransition(
                f"task {task.pk} is {_status_label(task.status)}; only work awaiting merge (or "
                "whose pull request was closed) can be marked merged"
            )
        fields: dict = {"merge_commit": str(merge_commit or "")[:64]}
        if task.pr_number:
            fields["pr_state"] = "merged"
        return _move(
            task,
            task.status,
            actor=actor,
            note=(note or f"merged into {task.base_branch or 'its base'}")[:2000],
            status=Status.COMPLETED,
            delivery_state=DeliveryState.MERGED,
            finished_at=timezone.now(),
            conflicts=[],
            last_error_type="",
            last_error="",
            **fields,
        )


def pr_closed(task_id: int | str, *, actor: str) -> Task:
    """Closed without merging: the work waits for a person, with that reason."""
    actor = _check_actor(actor)
    with _atomic():
        task = _load_delivering(
            task_id, "closed", [DeliveryState.AWAITING_MERGE, DeliveryState.CONFLICT]
        )
        reason = f"pull request #{task.pr_number} was closed without merging"
        return _move(
            task,
            Status.REVIEW_NEEDED,
            actor=actor,
            note=f"blocked: {reason}",
            status=Status.BLOCKED,
            delivery_state=DeliveryState.PR_CLOSED,
            pr_state="closed",
            last_error_type="pr_closed",
            last_error=reason,
        )


def record_conflicts(task_id: int | str, files: Sequence[str], *, actor: str) -> Task:
    """A merge check of work awaiting merge: conflicting files, or (empty) merges cleanly now."""
    actor = _check_actor(actor)
    files = [str(f)[:1000] for f in files][:MAX_CHANGED_FILES]
    with _atomic():
        task = _load_delivering(
            task_id, "checked for conflicts", [DeliveryState.AWAITING_MERGE, DeliveryState.CONFLICT]
        )
        base = task.base_branch or "its base"
        state = DeliveryState.CONFLICT if files else DeliveryState.AWAITING_MERGE
        if list(task.conflicts or []) == files and task.delivery_state == state:
            return task
        note = (
            f"conflicts with {base} in {_files_phrase(files)}: nothing was merged"
            if files
            else f"merges cleanly into {base} again"
        )
        return _move(
            task,
            Status.REVIEW_NEEDED,
            actor=actor,
            note=note[:2000],
            status=Status.REVIEW_NEEDED,
            delivery_state=state,
            conflicts=files,
        )


MAX_COMMENT_LENGTH = 4000
# Where a person may ask for changes: work waiting to be merged, delivered work, blocked work.
REWORKABLE = (Status.REVIEW_NEEDED, Status.COMPLETED, Status.BLOCKED)


def request_changes(
    task_id: int | str, *, comment: str, actor: str, findings: Sequence[dict] | None = None
) -> Task:
    """A person (or a GitHub review) asks for changes: a rework round on the same branch.

    The comment is the first finding, before any file-and-line ones; the builder resumes its
    session with them. The round is the person's: it does not count against the review limit.
    """
    actor = _check_actor(actor)
    comment = (comment or "").strip() if isinstance(comment, str) else ""
    if not comment and not findings:
        raise InvalidInput("say what should change: the comment is empty")
    if len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidInput(
            f"the comment is {len(comment)} characters; the limit is {MAX_COMMENT_LENGTH}"
        )
    with _atomic():
        task = _load(task_id)
        if task.is_review:
            raise IllegalTransition(
                f"task {task.pk} is a review; ask for changes on the work it reviews "
                f"(task #{task.parent_id})"
            )
        waiting = task.status == Status.REVIEW_NEEDED and task.delivery_state in WAITING_DELIVERY
        done = task.status == Status.COMPLETED and task.delivery_state != DeliveryState.MERGED
        if not (waiting or done or task.status == Status.BLOCKED):
            if task.status == Status.COMPLETED:
                raise IllegalTransition(
                    f"task {task.pk} is already merged; submit a new task for further changes"
                )
            raise IllegalTransition(
                f"task {task.pk} is {_status_label(task.status)}; changes can be asked for on "
                "work awaiting merge, delivered but not merged, or blocked"
            )
        by = actor.split(":", 1)[-1]
        asked = []
        if comment:
            asked.append(
                {
                    "severity": "HIGH",
                    "title": comment.splitlines()[0][:300],
                    "detail": comment,
                    "source": actor,
                }
            )
        for item in findings or ():
            if isinstance(item, dict) and (item.get("title") or item.get("detail")):
                asked.append(
                    {
                        "severity": str(item.get("severity") or "MEDIUM").upper()[:10],
                        "title": str(item.get("title") or item.get("detail"))[:300],
                        "detail": str(item.get("detail") or "")[:4000],
                        "file": str(item.get("file") or "")[:1000],
                        "line": item["line"] if isinstance(item.get("line"), int) else None,
                        "source": actor,
                    }
                )
        new_round = task.review_round + 1
        context = {
            **(task.context or {}),
            "findings": asked,
            "failed_reviews": [],
            "summaries": [f"Changes requested by {by}"],
            "round_base": new_round,
            "changes_requested_by": actor,
        }
        where = "" if not task.pr_number else f" (pull request #{task.pr_number} stays open)"
        return _move(
            task,
            task.status,
            actor=actor,
            note=f"changes requested: {comment or asked[0]['title']}"[:1900] + where,
            status=Status.PENDING,
            review_round=new_round,
            pipeline_step=0,
            context=context,
            worker_id=None,
            attempt_count=0,
            not_before=None,
            finished_at=None,
            delivery_state=DeliveryState.NONE,
            conflicts=[],
            last_error_type="",
            last_error="",
        )


# --- People's moves ---------------------------------------------------------------------------


def retry(task_id: int | str, *, actor: str) -> Task:
    """A person sends a dead-letter or blocked task back to work with fresh attempts."""
    actor = _check_actor(actor)
    with _atomic():
        task = _load(task_id)
        allowed = [Status.DEAD_LETTER, Status.BLOCKED]
        if task.status not in allowed:
            raise _illegal(task, "retried", allowed)
        if task.delivery_state == DeliveryState.FAILED:  # reviews passed; only delivery failed
            if not settings.VIBE_GITHUB_TOKEN:
                raise InvalidInput(
                    f"task {task.pk} waits for a pull request, but VIBE_GITHUB_TOKEN is not "
                    "set; set it, then retry"
                )
            return _move(
                task,
                Status.BLOCKED,
                actor=actor,
                note="retried; opening the pull request again",
                status=Status.REVIEW_NEEDED,
                delivery_state=DeliveryState.OPENING_PR,
                last_error_type="",
                last_error="",
            )
        fields: dict = {}
        if not task.is_review:
            # A fresh round id, so reviews of earlier rounds never count for the new one.
            fields = {
                "review_round": task.review_round + 1,
                "context": {**(task.context or {}), "round_base": task.review_round + 1},
                "pipeline_step": 0,
                "delivery_state": DeliveryState.NONE,
                "conflicts": [],
            }
        return _move(
            task,
            allowed,
            actor=actor,
            note="retried; attempts reset",
            status=Status.PENDING,
            attempt_count=0,
            not_before=None,
            worker_id=None,
            **fields,
        )


def cancel(task_id: int | str, *, actor: str) -> Task:
    """Stop a task for good; open reviews of it are cancelled too."""
    actor = _check_actor(actor)
    with _atomic():
        task = _load(task_id, lock=False)
        # A review: lock the work it reviews first, the order complete() uses, so they never
        # deadlock; then the review itself.
        parent = _load(task.parent_id) if task.parent_id else None
        task = _load(task.pk)
        if task.status not in OPEN_STATUSES:
            raise _illegal(task, "cancelled", OPEN_STATUSES)
        held_by = task.worker_id if task.status == Status.IN_PROGRESS else None
        if held_by:
            _stop_agent_of(task)
        _move(
            task,
            task.status,
            actor=actor,
            note="cancelled",
            status=Status.CANCELLED,
            lease_expires_at=None,
            finished_at=timezone.now(),
        )
        _release_worker_slot(held_by)
        for child in task.children.filter(status__in=OPEN_STATUSES).select_for_update():
            child_held = child.worker_id if child.status == Status.IN_PROGRESS else None
            if child_held:
                _stop_agent_of(child)
            _move(
                child,
                child.status,
                actor=actor,
                note=f"cancelled with task #{task.pk}",
                status=Status.CANCELLED,
                lease_expires_at=None,
                finished_at=timezone.now(),
            )
            _release_worker_slot(child_held)
        if parent is not None:
            _review_cancelled(parent, task, actor=actor)
        _tell_who_waits(task)
        return task


def _tell_who_waits(task: Task) -> None:
    """Work that waited for a cancelled task can never start: people hear it, per task."""
    waiting = task.dependents.filter(status__in=(Status.PENDING, Status.AWAITING_APPROVAL))
    for dependant in waiting.order_by("pk")[:10]:
        _notify_people(
            dependant,
            Status.BLOCKED,
            f"waiting for #{task.pk} (cancelled): it cannot start; cancel it, or submit it "
            "again without that prerequisite",
        )


def _stop_agent_of(task: Task) -> None:
    """Tell the worker running the task, at commit, to stop its agent now (PostgreSQL NOTIFY;
    elsewhere its keeper sees the cancel within about a second)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CANCEL_CHANNEL, str(task.pk)])


def _review_cancelled(parent: Task, review: Task, *, actor: str) -> None:
    """A cancelled review can never pass, so the work it was reviewing waits for a person."""
    if parent.status != Status.REVIEW_NEEDED:
        return
    if (review.review_round, review.pipeline_step) != (parent.review_round, parent.pipeline_step):
        return  # a review of an earlier round or step: it no longer decides anything
    label = pipeline.REVIEW_LABELS.get(review.lane, review.lane)
    _move(
        parent,
        Status.REVIEW_NEEDED,
        actor=actor,
        note=f"blocked: its {label} #{review.pk} was cancelled; retry it to rework, or cancel it",
        status=Status.BLOCKED,
        last_error_type="review_cancelled",
        last_error=f"{label} #{review.pk} was cancelled",
    )


def give_back_attempt(task_id: int | str, *, actor: str, reason: str) -> Task:
    """Undo an attempt a broken worker spent: the fault was the worker's, not the task's.

    Only a task whose current state is that worker-side failure moves (dead letter, or pending
    waiting for its retry), so a task a person has retried or cancelled since stays as it is.
    """
    actor = _check_actor(actor)
    with _atomic():
        task = _load(task_id)
        allowed = (Status.DEAD_LETTER, Status.PENDING)
        if task.status not in allowed or task.last_error_type not in INFRASTRUCTURE_ERRORS:
            raise _illegal(task, "given its attempt back", allowed)
        return _move(
            task,
            task.status,
            actor=actor,
            note=f"attempt given back: {reason}"[:2000],
            status=Status.PENDING,
            attempt_count=max(task.attempt_count - 1, 0),
            not_before=None,
            worker_id=None,
        )


# --- Workers ----------------------------------------------------------------------------------


def set_worker_status(worker_id: str, status: str, *, actor: str, reason: str = ""):
    """Pause, resume, drain or mark a worker offline. Paused and draining workers claim nothing.

    `reason` is shown on the pool and by `vibe worker` until the next change of status, so a
    worker that paused itself says why.
    """
    from workers_app.models import Worker, WorkerStatus

    actor = _check_actor(actor)
    if status not in WorkerStatus.values:
        raise InvalidInput(
            f"unknown worker status {status!r}; use one of {', '.join(WorkerStatus.values)}"
        )
    with _atomic():
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


DOORS = {"user": "web", "slack": "slack", "discord": "discord", "cli": "cli", "github": "github"}


def door_of(actor: str) -> str:
    """The door an actor string came through, as far as it tells ('user:' is the web or --as)."""
    return DOORS.get(actor.split(":", 1)[0], actor.split(":", 1)[0][:20])


def audit(
    action: str, target: str, *, actor: str, outcome: str, reason: str = "", door: str = ""
) -> None:
    """One audit row; written in its own transaction, so a refusal is kept though nothing moved."""
    from .models import AuditEntry

    AuditEntry.objects.create(
        actor=(actor or "unknown")[:200],
        door=(door or door_of(actor or ""))[:20],
        action=action[:40],
        target=str(target)[:200],
        outcome=outcome,
        reason=str(reason)[:4000],
    )


def refused(action: str, target: str, *, actor: str, reason: str, door: str = "") -> None:
    """Record an attempt the factory refused (no permission, an illegal move, a bad input)."""
    try:
        audit(action, target, actor=actor, outcome="refused", reason=reason, door=door)
    except DatabaseError:  # the refusal itself must still reach the person
        logger.exception("could not record the refused %s of %s by %s", action, target, actor)


def pause_worker(worker_id: str, *, actor: str):
    from workers_app.models import WorkerStatus

    return set_worker_status(worker_id, WorkerStatus.PAUSED, actor=actor)


def resume_worker(worker_id: str, *, actor: str):
    from workers_app.models import WorkerStatus

    return set_worker_status(worker_id, WorkerStatus.ONLINE, actor=actor)


def retire_worker(worker_id: str, *, actor: str):
    """Take a stale worker out of the pool and the counts, keeping its row for attribution.

    Only a worker with no live process and no running task: a live one would heartbeat straight
    back (stop it first), and a running task's lease must run out (or the task be cancelled)
    before nobody holds it. A retired worker that heartbeats again is back in the pool, in the
    status it had; `runfactory` does not start it until then.
    """
    from workers_app.models import Worker, stale_cutoff

    actor = _check_actor(actor)
    with _atomic():
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
    from workers_app.models import Worker

    with _atomic():
        Worker.objects.filter(pk=worker_id).update(last_heartbeat=timezone.now())
