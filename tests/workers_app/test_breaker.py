"""The circuit breaker: a worker that fails for its own reasons stops, gives back, and says so."""

from __future__ import annotations

import pytest

from chatops_app.models import Notification
from tasks_app import lifecycle
from tasks_app.choices import NotificationEvent, Status
from tasks_app.models import Task
from workers_app.breaker import CircuitBreaker, trip
from workers_app.models import Worker, WorkerStatus

# --- Counting ---------------------------------------------------------------------------------


def test_trips_at_the_limit_of_infrastructure_failures_in_a_row():
    breaker = CircuitBreaker(3)

    assert breaker.record_failure("agent_auth", 1, "401 invalid x-api-key") is False
    assert breaker.record_failure("agent_auth", 2, "401 invalid x-api-key") is False
    assert breaker.record_failure("agent_auth", 3, "401 Invalid API key · Please run /login")

    assert breaker.tripped
    assert breaker.task_ids == [1, 2, 3]
    assert (
        breaker.reason == "3 agent_auth failures in a row: 401 Invalid API key · Please run /login"
    )


def test_a_success_resets_the_streak():
    breaker = CircuitBreaker(2)
    breaker.record_failure("agent_missing", 1)

    breaker.record_success()

    assert breaker.task_ids == []
    assert breaker.record_failure("agent_missing", 2) is False
    assert breaker.record_failure("agent_missing", 3) is True
    assert breaker.task_ids == [2, 3]


def test_a_failure_that_is_the_tasks_own_ends_the_streak():
    breaker = CircuitBreaker(2)
    breaker.record_failure("sandbox_error", 1)

    assert breaker.record_failure("agent_exit", 2) is False
    assert breaker.record_failure("timeout", 3) is False
    assert breaker.task_ids == []
    assert breaker.record_failure("sandbox_error", 4) is False


def test_mixed_infrastructure_types_count_together_and_are_all_named():
    breaker = CircuitBreaker(3)
    breaker.record_failure("workspace_error", 7)
    breaker.record_failure("agent_missing", 8)

    assert breaker.record_failure("workspace_error", 7)  # the same task again counts once

    assert breaker.task_ids == [7, 8]
    assert breaker.describe("disk full") == (
        "3 infrastructure (workspace_error, agent_missing) failures in a row: disk full"
    )


def test_limit_defaults_to_the_setting(settings):
    settings.VIBE_WORKER_FAILURE_LIMIT = 5
    assert CircuitBreaker().limit == 5
    assert CircuitBreaker(1).record_failure("agent_auth", 1) is True


# --- Tripping ---------------------------------------------------------------------------------


@pytest.fixture
def worker(db) -> Worker:
    return Worker.objects.create(worker_id="@breaker-1", lane="backend", capacity_limit=1)


def _fail_next(worker: Worker, error_type: str, error: str) -> Task:
    task = lifecycle.submit(f"work {error_type}", lane="backend", actor="cli", pipeline="none")
    claimed = lifecycle.claim_next(worker)
    assert claimed is not None and claimed.pk == task.pk
    lifecycle.fail(
        task.pk, worker_id=worker.pk, token=claimed.claim_token, error_type=error_type, error=error
    )
    return Task.objects.get(pk=task.pk)


def test_trip_pauses_the_worker_gives_attempts_back_and_tells_people(worker):
    breaker = CircuitBreaker(3)
    tasks = []
    for _ in range(3):
        task = _fail_next(worker, "agent_auth", "Invalid API key · Please run /login")
        assert task.status == Status.DEAD_LETTER and task.attempt_count == 1
        tasks.append(task)
        tripped = breaker.record_failure("agent_auth", task.pk)
    assert tripped

    reason = trip(worker.pk, breaker, last_error="Invalid API key · Please run /login")

    assert reason == "3 agent_auth failures in a row: Invalid API key · Please run /login"
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.PAUSED
    assert worker.status_reason == reason
    for task in tasks:
        task.refresh_from_db()
        assert task.status == Status.PENDING
        assert task.attempt_count == 0
        history = task.history.order_by("-id").first()
        assert history.actor == "worker:@breaker-1"
        assert history.note.startswith("attempt given back: @breaker-1 paused itself: 3 agent_auth")
    rows = Notification.objects.filter(event=NotificationEvent.WORKER_PAUSED)
    assert sorted(rows.values_list("channel", flat=True)) == ["discord", "slack"]
    row = rows.first()
    assert row.task_id is None and row.worker == "@breaker-1" and row.note == reason
    assert row.data == {
        "task_ids": [t.pk for t in tasks],
        "error_type": "agent_auth",
        "limit": 3,
    }
    assert breaker.task_ids == []  # counts afresh once a person resumes it


def test_trip_leaves_tasks_a_person_moved_since(worker):
    other = Worker.objects.create(worker_id="@breaker-2", lane="backend")
    breaker = CircuitBreaker(3)
    cancelled = _fail_next(worker, "agent_missing", "claude: command not found")
    breaker.record_failure("agent_missing", cancelled.pk)
    lifecycle.cancel(cancelled.pk, actor="user:alice")
    taken = _fail_next(worker, "agent_missing", "claude: command not found")
    breaker.record_failure("agent_missing", taken.pk)
    lifecycle.retry(taken.pk, actor="user:alice")
    assert lifecycle.claim_next(other).pk == taken.pk  # a healthy worker runs it now
    left = _fail_next(worker, "agent_missing", "claude: command not found")
    assert breaker.record_failure("agent_missing", left.pk)

    trip(worker.pk, breaker, last_error="claude: command not found")

    assert Task.objects.get(pk=cancelled.pk).status == Status.CANCELLED
    taken = Task.objects.get(pk=taken.pk)
    assert taken.status == Status.IN_PROGRESS and taken.worker_id == "@breaker-2"
    left = Task.objects.get(pk=left.pk)
    assert left.status == Status.PENDING and left.attempt_count == 0
    row = Notification.objects.get(event=NotificationEvent.WORKER_PAUSED, channel="slack")
    assert row.data["task_ids"] == [left.pk]
    assert Worker.objects.get(pk=worker.pk).status == WorkerStatus.PAUSED


def test_trip_on_a_worker_a_person_already_paused_keeps_their_pause(worker):
    lifecycle.set_worker_status(worker.pk, WorkerStatus.PAUSED, actor="user:alice", reason="deploy")
    breaker = CircuitBreaker(1)
    breaker.record_failure("agent_auth", 999_999)  # a task deleted since

    reason = trip(worker.pk, breaker, last_error="401 Unauthorized")

    assert reason == "1 agent_auth failure in a row: 401 Unauthorized"
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.PAUSED and worker.status_reason == "deploy"
    rows = Notification.objects.filter(event=NotificationEvent.WORKER_PAUSED)
    assert rows.count() == 2 and rows.first().data["task_ids"] == []
