"""The seed's tables as models: defaults, constraints, indexes, the default pool and the roles."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.actions import ACTION_PERMISSIONS, can, require
from tasks_app.choices import OPEN_STATUSES, Lane, Status, Tier
from tasks_app.models import Task, TaskHistory
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db

DEFAULT_POOL = {
    # worker_id: (lane, tier, capacity_limit, status, priority_score)
    "@backend-1": ("backend", "senior", 2, "online", 60),
    "@frontend-1": ("frontend", "senior", 2, "online", 60),
    "@qa-1": ("qa", "senior", 2, "online", 60),
    "@security-1": ("security", "senior", 3, "online", 70),
    "@ux-designer": ("ux", "senior", 3, "online", 70),
    "@data-analyst": ("data", "senior", 3, "online", 70),
}


def test_the_migration_installs_the_default_pool():
    rows = {
        w.worker_id: (w.lane, w.tier, w.capacity_limit, w.status, w.priority_score)
        for w in Worker.objects.all()
    }
    assert rows == DEFAULT_POOL
    assert set(Worker.objects.values_list("active_tasks", flat=True)) == {0}


def test_lanes_and_tiers_are_the_contract():
    assert Lane.values == ["backend", "frontend", "qa", "security", "ux", "data"]
    assert Tier.values == ["junior", "senior", "lead"]
    assert Status.values == [
        "pending",
        "awaiting_approval",
        "in_progress",
        "review_needed",
        "blocked",
        "completed",
        "dead_letter",
        "cancelled",
    ]
    assert set(OPEN_STATUSES) == set(Status.values) - {"completed", "cancelled"}


def test_a_raw_insert_of_a_task_gets_database_defaults():
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO tasks (goal, lane) VALUES ('raw goal', 'qa')")
    task = Task.objects.get(goal="raw goal")
    assert (task.status, task.priority, task.risk, task.attempt_count) == ("pending", 50, "low", 0)
    assert (task.context, task.result, task.last_error_type, task.claim_token) == ({}, {}, "", 0)
    assert task.created_at is not None and task.updated_at is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO task_history (task_id, to_status, actor) VALUES (%s, %s, %s)",
            [task.pk, "pending", "cli"],
        )
    assert TaskHistory.objects.get(task=task).created_at is not None


@pytest.mark.parametrize(
    ("model", "pk_field", "pk", "field", "value"),
    [
        (Task, None, None, "status", "finished"),
        (Task, None, None, "attempt_count", -1),
        (Task, None, None, "max_attempts", 0),
        (Worker, "worker_id", "@qa-1", "capacity_limit", -1),
        (Worker, "worker_id", "@qa-1", "active_tasks", -1),
    ],
)
def test_constraints_refuse_impossible_rows(model, pk_field, pk, field, value):
    if model is Task:
        pk = lifecycle.submit("x", lane="qa", actor="cli").pk
    with pytest.raises(IntegrityError), transaction.atomic():
        model.objects.filter(pk=pk).update(**{field: value})


def _index_sql(table: str, name: str) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT sql FROM sqlite_master WHERE type='index' AND name=%s", [name])
        else:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname=%s", [name])
        row = cursor.fetchone()
    assert row, f"index {name} is missing on {table}"
    return row[0]


def test_claimable_tasks_have_a_partial_index_on_pending_rows():
    sql = _index_sql("tasks", "tasks_claimable_idx")
    assert "WHERE" in sql.upper() and "pending" in sql
    assert "lane" in sql and "priority" in sql
    assert "status" in _index_sql("tasks", "tasks_status_idx")
    assert "in_progress" in _index_sql("tasks", "tasks_lease_idx")


def test_custom_permissions_and_roles():
    codenames = set(Permission.objects.values_list("codename", flat=True))
    assert {"approve_task", "retry_task", "cancel_task", "manage_workers"} <= codenames
    perms = {
        group.name: set(group.permissions.values_list("codename", flat=True))
        for group in Group.objects.all()
    }
    assert {"view_task", "view_worker"} <= perms["Viewer"]
    assert {"retry_task", "cancel_task", "manage_workers"} <= perms["Operator"]
    assert "approve_task" not in perms["Operator"]
    assert "approve_task" in perms["Approver"]


def test_who_may_do_what(viewer, operator, approver, outsider, superuser):
    expected = {
        viewer: set(),
        operator: {"retry", "cancel", "pause", "resume", "retire", "rework", "rebase", "submit"},
        approver: {
            "retry",
            "cancel",
            "pause",
            "resume",
            "retire",
            "rework",
            "rebase",
            "approve",
            "merge",
            "submit",
        },
        outsider: set(),
        superuser: set(ACTION_PERMISSIONS),
    }
    for user, allowed in expected.items():
        got = {action for action in ACTION_PERMISSIONS if can(user, action)}
        assert got == allowed, user.username
    assert not can(None, "retry")
    approver.is_active = False
    assert not can(approver, "approve")
    with pytest.raises(PermissionDenied, match="vera may not approve tasks here"):
        require(viewer, "approve")
    with pytest.raises(PermissionDenied, match="an unlinked user may not retry"):
        require(None, "retry")
    # A worker action names workers, not tasks.
    with pytest.raises(PermissionDenied, match="vera may not pause workers here"):
        require(viewer, "pause")
    require(operator, "retry")


def test_task_helpers():
    task = lifecycle.submit("a" * 100, lane="backend", actor="cli")
    assert str(task) == f"#{task.pk} " + "a" * 60
    assert task.findings == [] and not task.is_review
    task.result = {"findings": [{"severity": "LOW", "title": "t"}]}
    assert task.findings == [{"severity": "LOW", "title": "t"}]
    task.result = []
    assert task.findings == []
    history = task.history.get()
    assert str(history) == f"#{task.pk} ∅ → pending by cli"


def test_task_querysets():
    now = timezone.now()
    open_task = lifecycle.submit("open", lane="qa", actor="cli")
    done = lifecycle.cancel(lifecycle.submit("gone", lane="qa", actor="cli").pk, actor="cli")
    assert list(Task.objects.open()) == [open_task]
    assert list(Task.objects.claimable("qa", now + timedelta(seconds=1))) == [open_task]
    assert list(Task.objects.claimable("backend")) == []
    running = lifecycle.claim_next("@qa-1")
    assert list(Task.objects.expired_leases(now)) == []
    assert list(Task.objects.expired_leases(now + timedelta(days=1))) == [running]
    assert done.status == Status.CANCELLED


def test_worker_derived_status():
    worker = Worker.objects.get(pk="@qa-1")
    assert worker.heartbeat_age is None and not worker.is_alive
    assert worker.display_status == WorkerStatus.OFFLINE
    worker.last_heartbeat = timezone.now() - timedelta(seconds=10)
    assert worker.is_alive and worker.display_status == WorkerStatus.ONLINE
    worker.status = WorkerStatus.PAUSED
    assert worker.display_status == WorkerStatus.PAUSED
    worker.last_heartbeat = timezone.now() - timedelta(hours=1)
    assert worker.display_status == WorkerStatus.OFFLINE
    assert str(worker) == "@qa-1"


def test_the_history_event_migration_reads_old_failures_as_the_chart_did():
    task = Task.objects.create(goal="old", lane="qa")
    old = {
        "failed": ("in_progress", "pending", "attempt 1/3 failed (timeout); retrying in 30s"),
        "released": ("in_progress", "pending", "released"),
        "dead": ("in_progress", "dead_letter", "attempt 3/3 failed (timeout)"),
    }
    rows = {
        name: TaskHistory.objects.create(
            task=task, from_status=was, to_status=now, actor="system", note=note
        )
        for name, (was, now, note) in old.items()
    }
    import_module("tasks_app.migrations.0012_history_event").backfill(apps, None)
    events = {name: TaskHistory.objects.get(pk=row.pk).event for name, row in rows.items()}
    assert events == {"failed": "failed", "released": "pending", "dead": "failed"}
