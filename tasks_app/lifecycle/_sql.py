"""The measured statements of the claim → complete path, run on the driver's own cursor.

Only the workers' hot path uses these; people's moves use the ORM (`moves.move`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.db import models, transaction

from ..models import Task, TaskHistory

# --- Hand-written SQL for the hot path ----------------------------------------------------------
# A worker's claim→complete runs many times a second; building these statements with the ORM
# cost about ten times more than running them (bench/claims.py). The SQL below is plain and
# runs unchanged on SQLite and PostgreSQL; rows still pass through the model fields' own
# converters, so callers get ordinary Task instances. Status literals (not parameters) let
# SQLite prove the partial index `tasks_claimable_idx` applies.

TASKS = Task._meta.db_table


def _pending_past_backoff(lane: str) -> str:
    """The claimable rule's cheap half, shared by the claim and the idle worker's look."""
    return (
        f"{TASKS}.status = 'pending' AND {TASKS}.lane = {lane}"
        f" AND ({TASKS}.not_before IS NULL OR {TASKS}.not_before <= %s)"
    )


# The claimable rule, as `TaskQuerySet.claimable` says it too (a test pins them together).
CLAIMABLE_SQL = (
    f"WHERE {_pending_past_backoff('%s')}"
    f" AND NOT EXISTS (SELECT 1 FROM {Task.depends_on.through._meta.db_table} dep"
    f" JOIN {TASKS} pre ON pre.id = dep.to_task_id"
    f" WHERE dep.from_task_id = {TASKS}.id AND pre.status <> 'completed')"
    f" ORDER BY {TASKS}.priority DESC, {TASKS}.created_at, {TASKS}.id LIMIT 1"
)
# Whether the worker may claim and its lane has a pending task past its backoff (a cheap read).
MAY_CLAIM_SQL = (
    "SELECT w.status = 'online' AND w.active_tasks < w.capacity_limit AND EXISTS ("
    f"SELECT 1 FROM {TASKS} WHERE {_pending_past_backoff('w.lane')})"
    " FROM worker_health w WHERE w.worker_id = %s"
)
_task_columns_by_vendor: dict[str, tuple[str, str, list[str], list[tuple]]] = {}


def task_columns(db) -> tuple[str, str, list[str], list[tuple]]:
    """A whole Task's SELECT list, its RETURNING list, attribute names and column converters."""
    cached = _task_columns_by_vendor.get(db.vendor)
    if cached is None:
        fields = Task._meta.concrete_fields
        select = ", ".join(f"{TASKS}.{db.ops.quote_name(f.column)}" for f in fields)
        returning = ", ".join(db.ops.quote_name(f.column) for f in fields)
        converters = []
        for field in fields:
            col = field.get_col(TASKS)
            funcs = db.ops.get_db_converters(col) + col.get_db_converters(db)
            converters.append((col, funcs))
        cached = (select, returning, [f.attname for f in fields], converters)
        _task_columns_by_vendor[db.vendor] = cached
    return cached


def task_from_row(db, row: Sequence) -> Task:
    """A Task from a row of `task_columns`, through each field's own converters."""
    _select, _returning, attnames, converters = task_columns(db)
    values = []
    for value, (col, funcs) in zip(row, converters, strict=True):
        for func in funcs:
            value = func(value, col, db)
        values.append(value)
    return Task.from_db(db.alias, attnames, values)


def fetch_task(where: str, params: Sequence) -> Task | None:
    """One Task by hand-written SQL (the claim path reads it without a row lock)."""
    db = transaction.get_connection()
    select = task_columns(db)[0]
    sql = f"SELECT {select} FROM {TASKS} {where}"
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else task_from_row(db, row)


ID_COLUMN = [f.attname for f in Task._meta.concrete_fields].index("id")
# Claim a slot of the worker's capacity: exact, because the row is re-checked as it is written.
TAKE_SLOT_SQL = (
    "UPDATE worker_health SET active_tasks = active_tasks + 1"
    " WHERE worker_id = %s AND status = 'online' AND active_tasks < capacity_limit"
    " RETURNING lane"
)
GIVE_SLOT_BACK_SQL = (
    "UPDATE worker_health SET active_tasks = active_tasks - 1"
    " WHERE worker_id = %s AND active_tasks > 0"
)
_claim_sql_by_vendor: dict[str, str] = {}


def claim_sql(db) -> str:
    """Pick the next claimable task of a lane and take it, in one statement."""
    sql = _claim_sql_by_vendor.get(db.vendor)
    if sql is None:
        skip = " FOR UPDATE SKIP LOCKED" if db.features.has_select_for_update_skip_locked else ""
        sql = (
            f"UPDATE {TASKS} SET status = 'in_progress', worker_id = %s,"
            " lease_expires_at = %s, claim_token = claim_token + 1, started_at = %s,"
            " not_before = NULL, finished_at = NULL, updated_at = %s"
            f" WHERE id = (SELECT {TASKS}.id FROM {TASKS} {CLAIMABLE_SQL}{skip})"
            f" AND status = 'pending' RETURNING {task_columns(db)[1]}"
        )
        _claim_sql_by_vendor[db.vendor] = sql
    return sql


@contextmanager
def statements(db) -> Iterator:
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
_update_columns: dict[str, tuple[str, models.Field, bool]] = {}


def _update_column(name: str) -> tuple[str, models.Field, bool]:
    """(quoted column, field, whether a plain str/int/None value can skip the field's prep)."""
    if name not in _update_columns:
        field = Task._meta.get_field(name)
        assert isinstance(field, models.Field)  # a concrete column of the tasks table
        plain = not isinstance(field, models.JSONField | models.DateTimeField)
        quoted = transaction.get_connection().ops.quote_name(field.column)
        _update_columns[name] = (quoted, field, plain)
    return _update_columns[name]


HISTORY_SQL = (
    f"INSERT INTO {TaskHistory._meta.db_table}"
    " (task_id, from_status, to_status, actor, note, event, error_type, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


def update_sql(
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
    sql = f"UPDATE {TASKS} SET {', '.join(sets)} WHERE id = %s AND status IN ({marks})"
    params += [pk, *expected]
    if held:
        sql += " AND worker_id = %s AND claim_token = %s"
        params += list(held)
    return sql, params
