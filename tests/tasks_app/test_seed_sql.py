"""The seed's own SQL, verbatim, against our migrated database (SQLite and PostgreSQL).

The statements below are copied character for character from the seed plan's schema change,
its ChatOps service and its Streamlit dashboard: if a migration renames a table or a column they
rely on, these tests fail. The seed's only UPDATE (a retry that bypasses the lifecycle) is left
out on purpose: retries go through `lifecycle.retry`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task
from workers_app.models import Worker

pytestmark = pytest.mark.django_db

# --- Seed: "Schema Change" ----------------------------------------------------------------------
SEED_INSERT = (
    "INSERT INTO worker_health (worker_id, lane, tier, capacity_limit, status, priority_score)\n"
    "VALUES \n"
    "    ('@security-1', 'security', 'senior', 3, 'online', 70),\n"
    "    ('@ux-designer', 'ux', 'senior', 3, 'online', 70),\n"
    "    ('@data-analyst', 'data', 'senior', 3, 'online', 70);"
)

# --- Seed: vibe_chatops.py --------------------------------------------------------------------
STATUS_WORKERS = (
    "\n"
    "        SELECT lane, COUNT(*) as count, SUM(active_tasks) as load\n"
    "        FROM worker_health WHERE status='online' GROUP BY lane\n"
    "    "
)
STATUS_TASKS = "\n        SELECT status, COUNT(*) as count FROM tasks GROUP BY status\n    "
DLQ_SUMMARY = (
    "\n"
    "        SELECT id, goal, lane, last_error_type FROM tasks \n"
    "        WHERE status='dead_letter' ORDER BY created_at DESC LIMIT 5\n"
    "    "
)

# --- Seed: dashboard.py -----------------------------------------------------------------------
ACTIVE_WORKERS = "\n        SELECT COUNT(*) FROM worker_health WHERE active_tasks > 0\n    "
TOTAL_WORKERS = "SELECT COUNT(*) FROM worker_health"
PENDING_COUNT = "\n        SELECT COUNT(*) FROM tasks WHERE status='pending'\n    "
IN_PROGRESS_COUNT = "\n        SELECT COUNT(*) FROM tasks WHERE status='in_progress'\n    "
DEAD_LETTER_COUNT = "\n        SELECT COUNT(*) FROM tasks WHERE status='dead_letter'\n    "
WORKER_POOL = (
    "\n"
    "    SELECT worker_id, lane, tier, active_tasks, capacity_limit, status\n"
    "    FROM worker_health ORDER BY lane, tier DESC\n"
)
PENDING_TAB = (
    "\n"
    "        SELECT id, lane, goal, worker_id, priority, created_at\n"
    "        FROM tasks WHERE status='pending' ORDER BY created_at DESC LIMIT 20\n"
    "    "
)
IN_PROGRESS_TAB = (
    "\n"
    "        SELECT id, lane, goal, worker_id, priority, updated_at\n"
    "        FROM tasks WHERE status='in_progress' ORDER BY updated_at DESC LIMIT 20\n"
    "    "
)
REVIEW_TAB = (
    "\n"
    "        SELECT id, lane, goal, worker_id, priority\n"
    "        FROM tasks WHERE status='review_needed' ORDER BY created_at DESC LIMIT 20\n"
    "    "
)
COMPLETED_TAB = (
    "\n"
    "        SELECT id, lane, goal, worker_id, updated_at\n"
    "        FROM tasks WHERE status='completed' ORDER BY updated_at DESC LIMIT 20\n"
    "    "
)
DLQ_TABLE = (
    "\n"
    "        SELECT id, lane, goal, last_error_type, attempt_count, created_at\n"
    "        FROM tasks WHERE status='dead_letter' ORDER BY created_at DESC\n"
    "    "
)

SEED_SPECIALISTS = {
    "@security-1": ("security", "senior", 3, "online", 70),
    "@ux-designer": ("ux", "senior", 3, "online", 70),
    "@data-analyst": ("data", "senior", 3, "online", 70),
}


def run(sql: str) -> tuple[list[str], list[tuple]]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        columns = [col[0].lower() for col in cursor.description]
        return columns, [tuple(row) for row in cursor.fetchall()]


def scalar(sql: str) -> int:
    return run(sql)[1][0][0]


def ids(sql: str) -> list[int]:
    return [row[0] for row in run(sql)[1]]


def test_the_seeds_insert_runs_unchanged():
    Worker.objects.filter(pk__in=SEED_SPECIALISTS).delete()  # the migration installed them
    with connection.cursor() as cursor:
        cursor.execute(SEED_INSERT)
    rows = Worker.objects.filter(pk__in=SEED_SPECIALISTS)
    got = {
        w.worker_id: (w.lane, w.tier, w.capacity_limit, w.status, w.priority_score) for w in rows
    }
    assert got == SEED_SPECIALISTS
    for worker in rows:  # the columns the seed leaves out get database defaults
        assert (worker.active_tasks, worker.agent_profile, worker.last_heartbeat) == (0, "", None)
        assert worker.created_at is not None and worker.updated_at is not None


@pytest.fixture
def factory_floor() -> dict[str, list[int]]:
    """Tasks in every column of the seed's dashboard, with distinct times so order is defined."""
    Worker.objects.filter(pk__in=["@qa-1", "@backend-1"]).update(capacity_limit=20)
    made: dict[str, list[int]] = {}

    def add(status: str, task: Task) -> None:
        made.setdefault(status, []).append(task.pk)

    for n in range(25):
        lifecycle.submit(f"pending chore {n}", lane="qa", actor="cli")
    for n in range(3):
        lifecycle.submit(f"running chore {n}", lane="qa", actor="cli", priority=100)
        add(Status.IN_PROGRESS, lifecycle.claim_next("@qa-1"))
    for n in range(7):
        lifecycle.submit(f"doomed chore {n}", lane="qa", actor="cli", priority=100)
        task = lifecycle.claim_next("@qa-1")
        lifecycle.fail(
            task.pk, worker_id="@qa-1", token=task.claim_token, error_type="config_error"
        )
        add(Status.DEAD_LETTER, task)
    for n in range(2):
        lifecycle.submit(f"finished chore {n}", lane="qa", actor="cli", priority=100)
        task = lifecycle.claim_next("@qa-1")
        lifecycle.complete(task.pk, worker_id="@qa-1", token=task.claim_token)
        add(Status.COMPLETED, task)
    lifecycle.submit("api work", lane="backend", actor="cli")
    task = lifecycle.claim_next("@backend-1")
    lifecycle.complete(task.pk, worker_id="@backend-1", token=task.claim_token)
    add(Status.REVIEW_NEEDED, task)
    lifecycle.submit("risky", lane="frontend", risk="high", actor="cli")
    lifecycle.pause_worker("@ux-designer", actor="cli")
    # Distinct, shuffled times: creation order and update order differ from id order.
    now = timezone.now()
    for index, pk in enumerate(Task.objects.order_by("pk").values_list("pk", flat=True)):
        Task.objects.filter(pk=pk).update(
            created_at=now - timedelta(minutes=(index * 7) % 41),
            updated_at=now - timedelta(minutes=(index * 11) % 43, seconds=index),
        )
    return made


def test_chatops_status_summary(factory_floor):
    columns, rows = run(STATUS_WORKERS)
    assert columns == ["lane", "count", "load"]
    expected = (
        Worker.objects.filter(status="online")
        .values("lane")
        .annotate(count=Count("pk"), load=Sum("active_tasks"))
    )
    assert sorted(rows) == sorted((r["lane"], r["count"], r["load"]) for r in expected)
    assert "ux" not in {row[0] for row in rows}  # paused workers are not online
    assert dict((lane, load) for lane, _, load in rows)["qa"] == 3

    columns, rows = run(STATUS_TASKS)
    assert columns == ["status", "count"]
    expected = Task.objects.values("status").annotate(count=Count("pk"))
    assert sorted(rows) == sorted((r["status"], r["count"]) for r in expected)
    assert dict(rows)["dead_letter"] == 7


def test_chatops_dead_letter_summary(factory_floor):
    columns, rows = run(DLQ_SUMMARY)
    assert columns == ["id", "goal", "lane", "last_error_type"]
    newest = Task.objects.filter(status="dead_letter").order_by("-created_at")[:5]
    assert rows == [(t.pk, t.goal, t.lane, "config_error") for t in newest]


def test_dashboard_metrics(factory_floor):
    assert scalar(ACTIVE_WORKERS) == Worker.objects.filter(active_tasks__gt=0).count() == 1
    assert scalar(TOTAL_WORKERS) == Worker.objects.count()
    assert scalar(PENDING_COUNT) == Task.objects.filter(status="pending").count()
    assert scalar(IN_PROGRESS_COUNT) == 3
    assert scalar(DEAD_LETTER_COUNT) == 7


def test_dashboard_worker_pool(factory_floor):
    columns, rows = run(WORKER_POOL)
    assert columns == ["worker_id", "lane", "tier", "active_tasks", "capacity_limit", "status"]
    expected = Worker.objects.values_list(
        "worker_id", "lane", "tier", "active_tasks", "capacity_limit", "status"
    )
    assert sorted(rows) == sorted(expected)
    keys = [(row[1], row[2]) for row in rows]
    assert [lane for lane, _ in keys] == sorted(lane for lane, _ in keys)
    assert ("ux", "senior", 0, 3, "paused") in {row[1:] for row in rows}


@pytest.mark.parametrize(
    ("sql", "status", "order", "limit", "columns"),
    [
        ("PENDING_TAB", "pending", "-created_at", 20, "id lane goal worker_id priority created_at"),
        (
            "IN_PROGRESS_TAB",
            "in_progress",
            "-updated_at",
            20,
            "id lane goal worker_id priority updated_at",
        ),
        ("REVIEW_TAB", "review_needed", "-created_at", 20, "id lane goal worker_id priority"),
        ("COMPLETED_TAB", "completed", "-updated_at", 20, "id lane goal worker_id updated_at"),
        (
            "DLQ_TABLE",
            "dead_letter",
            "-created_at",
            None,
            "id lane goal last_error_type attempt_count created_at",
        ),
    ],
)
def test_dashboard_tables(factory_floor, sql, status, order, limit, columns):
    got_columns, rows = run(globals()[sql])
    assert got_columns == columns.split()
    expected = Task.objects.filter(status=status).order_by(order)
    if limit:
        expected = expected[:limit]
    assert [row[0] for row in rows] == [t.pk for t in expected]
    assert rows, f"the fixture left the {status} column empty"
    by_pk = {t.pk: t for t in expected}
    for row in rows:
        task = by_pk[row[0]]
        assert row[1:3] == (task.lane, task.goal)


def test_dashboard_tabs_hold_at_most_twenty_cards(factory_floor):
    assert Task.objects.filter(status="pending").count() > 20
    assert len(ids(PENDING_TAB)) == 20
