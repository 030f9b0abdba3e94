"""Every transition of the lifecycle, and every move it must refuse without changing anything."""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import sqlite3
import threading
import time
from contextlib import closing, contextmanager, suppress
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chatops_app.models import Notification, Platform
from tasks_app import lifecycle, sqlite
from tasks_app.choices import OPEN_STATUSES, Status, error_hint
from tasks_app.lifecycle import (
    IllegalTransition,
    InvalidInput,
    LeaseLost,
    NewTask,
    TaskNotFound,
    WorkerNotFound,
)
from tasks_app.models import Task, TaskHistory
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db

SECURITY_CRITICAL = {
    "verdict": "FAIL",
    "findings": [{"severity": "CRITICAL", "title": "SQL injection in login"}],
}


# --- Helpers ----------------------------------------------------------------------------------


def submit(goal: str = "write the changelog", lane: str = "qa", **kwargs) -> Task:
    return lifecycle.submit(goal, lane=lane, actor=kwargs.pop("actor", "cli"), **kwargs)


def claim(worker_id: str = "@qa-1") -> Task:
    task = lifecycle.claim_next(worker_id)
    assert task is not None, f"{worker_id} found nothing to claim"
    return task


def finish(task: Task, result: dict | None = None) -> Task:
    lifecycle.complete(task.pk, worker_id=task.worker_id, token=task.claim_token, result=result)
    task.refresh_from_db()
    return task


def state(task: Task) -> tuple[str, int]:
    """What an illegal move must leave alone: the status and the number of history rows."""
    return (
        Task.objects.get(pk=task.pk).status,
        TaskHistory.objects.filter(task_id=task.pk).count(),
    )


def active(worker_id: str) -> int:
    return Worker.objects.get(pk=worker_id).active_tasks


def in_progress_of(worker_id: str) -> int:
    return Task.objects.filter(worker_id=worker_id, status=Status.IN_PROGRESS).count()


def last_history(task: Task) -> TaskHistory:
    return TaskHistory.objects.filter(task_id=task.pk).order_by("id").last()


def make_due(task: Task) -> None:
    """Skip the retry backoff, as if its time had come."""
    Task.objects.filter(pk=task.pk).update(not_before=timezone.now() - timedelta(seconds=1))


def task_in(status: str) -> Task:
    """A task brought to `status` through the lifecycle only."""
    if status == Status.PENDING:
        return submit()
    if status == Status.AWAITING_APPROVAL:
        return submit(risk="high")
    if status == Status.IN_PROGRESS:
        submit()
        return claim()
    if status == Status.COMPLETED:
        submit()
        return finish(claim())
    if status == Status.DEAD_LETTER:
        submit()
        task = claim()
        lifecycle.fail(
            task.pk, worker_id="@qa-1", token=task.claim_token, error_type="config_error"
        )
        task.refresh_from_db()
        return task
    if status == Status.CANCELLED:
        return lifecycle.cancel(submit().pk, actor="cli")
    if status == Status.REVIEW_NEEDED:
        submit(lane="backend")
        return finish(claim("@backend-1"))
    if status == Status.BLOCKED:
        parent = task_in(Status.REVIEW_NEEDED)
        parent.children.update(priority=100)  # ahead of any other open audit
        finish(claim("@security-1"), SECURITY_CRITICAL)
        parent.refresh_from_db()
        return parent
    raise AssertionError(status)


ALL_STATUSES = [s.value for s in Status]


def test_task_in_reaches_every_status():
    for status in ALL_STATUSES:
        assert Task.objects.get(pk=task_in(status).pk).status == status


# --- Submit -----------------------------------------------------------------------------------


def test_submit_creates_a_pending_task_with_one_history_row():
    task = submit("add a health endpoint", lane="backend", priority=70, actor="user:alice")
    task.refresh_from_db()
    assert (task.status, task.lane, task.priority, task.risk) == ("pending", "backend", 70, "low")
    assert task.pipeline == "backend"
    assert task.max_attempts == settings.VIBE_MAX_ATTEMPTS
    rows = list(task.history.values_list("from_status", "to_status", "actor"))
    assert rows == [("", "pending", "user:alice")]
    assert not Notification.objects.exists()


def test_submit_of_a_high_risk_task_waits_for_approval_and_tells_people():
    task = submit("drop the legacy table", risk="high")
    assert Task.objects.get(pk=task.pk).status == Status.AWAITING_APPROVAL
    assert list(task.history.values_list("to_status", flat=True)) == ["awaiting_approval"]
    notes = Notification.objects.filter(task=task)
    assert sorted(notes.values_list("channel", flat=True)) == sorted(Platform.values)
    assert set(notes.values_list("event", flat=True)) == {"awaiting_approval"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"goal": ""}, "the goal is empty"),
        ({"goal": "   \n "}, "the goal is empty"),
        ({"goal": "x" * 10_001}, "the goal is 10001 characters; the limit is 10000"),
        ({"lane": "marketing"}, "unknown lane 'marketing'; choose one of backend, frontend"),
        ({"risk": "extreme"}, "unknown risk 'extreme'"),
        ({"priority": 101}, "priority 101 is out of range; use 0 to 100"),
        ({"priority": -1}, "priority -1 is out of range"),
        ({"priority": "5"}, "priority must be a whole number, not '5'"),
        ({"priority": True}, "priority must be a whole number"),
        ({"pipeline": "mystery"}, "unknown pipeline 'mystery'"),
        ({"actor": ""}, "every change needs an actor"),
    ],
)
def test_submit_refuses_bad_input_and_writes_nothing(kwargs, message):
    args = {"goal": "a goal", "lane": "qa", "actor": "cli", **kwargs}
    goal = args.pop("goal")
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        lifecycle.submit(goal, **args)
    assert not Task.objects.exists()
    assert not TaskHistory.objects.exists()


def test_submit_with_a_missing_prerequisite_writes_nothing():
    with pytest.raises(TaskNotFound, match="task 999999 does not exist"):
        submit(depends_on=[999999])
    assert not Task.objects.exists()
    assert not TaskHistory.objects.exists()


def test_submit_after_an_id_beyond_any_task_is_refused_cleanly():
    with pytest.raises(lifecycle.InvalidInput, match="does not exist"):
        lifecycle.submit("x", lane="backend", actor="cli", depends_on=[10**20])
    assert not Task.objects.exists()


@pytest.mark.parametrize("depends_on", [["abc"], [None], ["1", "x"]])
def test_submit_with_prerequisites_that_are_not_ids_writes_nothing(depends_on):
    with pytest.raises(InvalidInput, match="prerequisites must be task ids"):
        submit(depends_on=depends_on)
    assert not Task.objects.exists()


def test_submit_many_is_all_or_nothing():
    specs = [NewTask("one", "qa"), NewTask("", "qa"), NewTask("three", "qa")]
    with pytest.raises(InvalidInput, match="item 2: the goal is empty"):
        lifecycle.submit_many(specs, actor="cli")
    assert not Task.objects.exists()
    tasks = lifecycle.submit_many([NewTask("one", "qa"), NewTask("two", "ux")], actor="cli")
    assert [t.goal for t in tasks] == ["one", "two"]
    assert TaskHistory.objects.count() == 2


# --- Approve ----------------------------------------------------------------------------------


def test_approve_moves_awaiting_approval_to_pending_and_records_who():
    task = submit(risk="high")
    lifecycle.approve(task.pk, actor="user:alice")
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.approved_by == "user:alice"
    assert task.approved_at is not None
    last = last_history(task)
    assert (last.from_status, last.to_status, last.actor) == (
        "awaiting_approval",
        "pending",
        "user:alice",
    )
    assert task.history.count() == 2


def test_a_task_waiting_for_approval_is_never_claimed_until_approved():
    task = submit(risk="high")
    assert lifecycle.claim_next("@qa-1") is None
    lifecycle.approve(task.pk, actor="user:alice")
    assert claim().pk == task.pk


# --- Illegal moves ----------------------------------------------------------------------------

PEOPLE_MOVES = {
    "approve": (lifecycle.approve, "approved", [Status.AWAITING_APPROVAL]),
    "retry": (lifecycle.retry, "retried", [Status.DEAD_LETTER, Status.BLOCKED]),
    "cancel": (lifecycle.cancel, "cancelled", list(OPEN_STATUSES)),
}
LABELS = {s.value: s.label.lower() for s in Status}


@pytest.mark.parametrize("move", sorted(PEOPLE_MOVES))
@pytest.mark.parametrize("status", ALL_STATUSES)
def test_people_moves_from_every_status(move, status):
    """Allowed: one history row. Refused: a message naming task, status and what is allowed."""
    function, verb, allowed = PEOPLE_MOVES[move]
    task = task_in(status)
    before_status, before_rows = state(task)
    if status in allowed:
        function(task.pk, actor="user:alice")
        after_status, after_rows = state(task)
        assert after_status == (Status.CANCELLED if move == "cancel" else Status.PENDING)
        assert after_rows == before_rows + 1
        last = last_history(task)
        assert (last.from_status, last.actor) == (status, "user:alice")
        return
    names = " or ".join(LABELS[s] for s in allowed)
    expected = f"task {task.pk} is {LABELS[status]}; only {names} tasks can be {verb}"
    with pytest.raises(IllegalTransition) as excinfo:
        function(task.pk, actor="user:alice")
    assert str(excinfo.value) == expected
    assert state(task) == (before_status, before_rows)


@pytest.mark.parametrize("status", [s for s in ALL_STATUSES if s != Status.IN_PROGRESS])
def test_worker_moves_on_a_task_that_is_not_running_are_refused(status):
    task = task_in(status)
    before = state(task)
    token = Task.objects.get(pk=task.pk).claim_token
    worker = task.worker_id or "@qa-1"
    for call in (
        lambda: lifecycle.complete(task.pk, worker_id=worker, token=token),
        lambda: lifecycle.fail(task.pk, worker_id=worker, token=token, error_type="agent_exit"),
        lambda: lifecycle.release(task.pk, worker_id=worker, token=token),
        lambda: lifecycle.heartbeat(task.pk, worker_id=worker, token=token),
    ):
        with pytest.raises(LeaseLost, match=f"task {task.pk} is no longer held by {worker}"):
            call()
    assert state(task) == before


@pytest.mark.parametrize("function", [lifecycle.approve, lifecycle.retry, lifecycle.cancel])
def test_missing_and_non_numeric_task_ids(function):
    with pytest.raises(TaskNotFound, match="^task 999999 does not exist$"):
        function(999999, actor="cli")
    with pytest.raises(TaskNotFound, match="^'abc' is not a task id; task ids are whole numbers$"):
        function("abc", actor="cli")
    with pytest.raises(TaskNotFound, match="is not a task id"):
        function(None, actor="cli")
    assert not TaskHistory.objects.exists()


def test_worker_moves_on_a_missing_task():
    with pytest.raises(TaskNotFound, match="task 424242 does not exist"):
        lifecycle.complete(424242, worker_id="@qa-1", token=1)
    with pytest.raises(TaskNotFound):
        lifecycle.fail(424242, worker_id="@qa-1", token=1, error_type="agent_exit")
    with pytest.raises(LeaseLost):
        lifecycle.heartbeat(424242, worker_id="@qa-1", token=1)


def test_people_moves_need_an_actor():
    task = submit(risk="high")
    with pytest.raises(InvalidInput, match="every change needs an actor"):
        lifecycle.approve(task.pk, actor="")
    assert state(task) == (Status.AWAITING_APPROVAL, 1)


# --- Claiming ---------------------------------------------------------------------------------


def test_claim_takes_the_task_with_a_lease_and_counts_it_on_the_worker():
    task = submit()
    before = timezone.now()
    claimed = claim("@qa-1")
    assert claimed.pk == task.pk
    claimed.refresh_from_db()
    assert claimed.status == Status.IN_PROGRESS
    assert claimed.worker_id == "@qa-1"
    assert claimed.claim_token == 1
    assert claimed.started_at >= before
    expected = before + timedelta(seconds=settings.VIBE_LEASE_SECONDS)
    assert abs((claimed.lease_expires_at - expected).total_seconds()) < 5
    last = last_history(claimed)
    assert (last.from_status, last.to_status, last.actor) == (
        "pending",
        "in_progress",
        "worker:@qa-1",
    )
    assert active("@qa-1") == 1 == in_progress_of("@qa-1")


def test_claim_with_nothing_to_do_returns_none_and_changes_nothing():
    assert lifecycle.claim_next("@qa-1") is None
    assert active("@qa-1") == 0


def test_claim_of_an_unknown_worker():
    with pytest.raises(WorkerNotFound, match="worker @nobody does not exist"):
        lifecycle.claim_next("@nobody")


def test_claim_accepts_a_worker_object():
    task = submit()
    assert lifecycle.claim_next(Worker.objects.get(pk="@qa-1")).pk == task.pk


def test_claim_order_is_priority_then_age():
    Worker.objects.filter(pk="@qa-1").update(capacity_limit=10)
    low = submit("low", priority=10)
    high = submit("high", priority=90)
    mid_new = submit("mid, newer", priority=50)
    mid_old = submit("mid, older", priority=50)
    Task.objects.filter(pk=mid_old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    order = [claim().pk for _ in range(4)]
    assert order == [high.pk, mid_old.pk, mid_new.pk, low.pk]


def test_claim_only_takes_tasks_of_the_workers_lane():
    backend = submit(lane="backend")
    assert lifecycle.claim_next("@qa-1") is None
    assert claim("@backend-1").pk == backend.pk


def test_claim_waits_for_the_not_before_time():
    task = submit()
    Task.objects.filter(pk=task.pk).update(not_before=timezone.now() + timedelta(minutes=5))
    assert lifecycle.claim_next("@qa-1") is None
    make_due(task)
    assert claim().pk == task.pk


def test_claim_waits_for_prerequisites_to_complete():
    Worker.objects.filter(pk="@qa-1").update(capacity_limit=10)
    first = submit("first", priority=10)
    second = submit("second", priority=90, depends_on=[first.pk])
    assert claim().pk == first.pk  # second outranks it but is not ready
    assert lifecycle.claim_next("@qa-1") is None
    finish(Task.objects.get(pk=first.pk))
    assert claim().pk == second.pk


def test_a_cancelled_prerequisite_never_releases_its_dependent():
    first = submit("first")
    submit("second", depends_on=[first.pk])
    lifecycle.cancel(first.pk, actor="cli")
    assert lifecycle.claim_next("@qa-1") is None


def test_claim_respects_capacity():
    for n in range(3):
        submit(f"task {n}")
    one, two = claim(), claim()
    assert lifecycle.claim_next("@qa-1") is None  # capacity 2
    assert active("@qa-1") == 2 == in_progress_of("@qa-1")
    finish(one)
    assert active("@qa-1") == 1
    claim()
    assert active("@qa-1") == 2 == in_progress_of("@qa-1")
    assert two.pk != one.pk


@pytest.mark.parametrize("status", [WorkerStatus.PAUSED, WorkerStatus.DRAINING])
def test_paused_or_draining_worker_claims_nothing(status):
    task = submit()
    lifecycle.set_worker_status("@qa-1", status, actor="cli")
    assert lifecycle.claim_next("@qa-1") is None
    assert state(task) == (Status.PENDING, 1)
    lifecycle.resume_worker("@qa-1", actor="cli")
    assert claim().pk == task.pk


def test_active_tasks_follows_every_kind_of_exit():
    Worker.objects.filter(pk="@qa-1").update(capacity_limit=10)
    for n in range(6):
        submit(f"task {n}")
    tasks = [claim() for _ in range(6)]
    assert active("@qa-1") == 6 == in_progress_of("@qa-1")
    finish(tasks[0])
    lifecycle.fail(tasks[1].pk, worker_id="@qa-1", token=tasks[1].claim_token, error_type="timeout")
    lifecycle.release(tasks[2].pk, worker_id="@qa-1", token=tasks[2].claim_token)
    lifecycle.cancel(tasks[3].pk, actor="cli")
    Task.objects.filter(pk=tasks[4].pk).update(lease_expires_at=timezone.now() - timedelta(1))
    assert lifecycle.requeue_expired() == 1
    assert active("@qa-1") == 1 == in_progress_of("@qa-1")
    finish(tasks[5])
    assert active("@qa-1") == 0 == in_progress_of("@qa-1")


# --- Heartbeat, fencing, release, expired leases -----------------------------------------------


def test_heartbeat_extends_the_lease_without_history():
    submit()
    task = claim()
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=1))
    lifecycle.heartbeat(task.pk, worker_id="@qa-1", token=task.claim_token, lease_seconds=600)
    task.refresh_from_db()
    assert task.lease_expires_at > timezone.now() + timedelta(seconds=500)
    assert task.history.count() == 2


def test_an_old_claim_token_is_fenced_off():
    submit()
    task = claim()
    lifecycle.release(task.pk, worker_id="@qa-1", token=task.claim_token)
    again = claim()
    assert again.claim_token == task.claim_token + 1
    before = state(again)
    with pytest.raises(LeaseLost, match=f"task {task.pk} is no longer held by @qa-1"):
        lifecycle.complete(task.pk, worker_id="@qa-1", token=task.claim_token)
    with pytest.raises(LeaseLost):
        lifecycle.fail(task.pk, worker_id="@qa-1", token=task.claim_token, error_type="timeout")
    with pytest.raises(LeaseLost):
        lifecycle.heartbeat(task.pk, worker_id="@qa-1", token=task.claim_token)
    with pytest.raises(LeaseLost):
        lifecycle.complete(task.pk, worker_id="@backend-1", token=again.claim_token)
    assert state(again) == before
    finish(again)


WORKER_WRITES = {
    "complete": lambda task: lifecycle.complete(
        task.pk, worker_id="@qa-1", token=task.claim_token, result={"summary": "done"}
    ),
    "fail": lambda task: lifecycle.fail(
        task.pk, worker_id="@qa-1", token=task.claim_token, error_type="agent_exit"
    ),
    "release": lambda task: lifecycle.release(task.pk, worker_id="@qa-1", token=task.claim_token),
}


def _cancel(task: Task) -> None:
    lifecycle.cancel(task.pk, actor="user:otto")


def _expire_and_claim_again(task: Task) -> None:
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert lifecycle.requeue_expired() == 1
    make_due(task)
    assert claim().claim_token == task.claim_token + 1  # the same worker id, a newer claim


TAKEOVERS = {
    # takeover: (what a person or the reaper does, the status it leaves, history rows, active)
    "cancelled": (_cancel, Status.CANCELLED, 3, 0),
    "claimed again": (_expire_and_claim_again, Status.IN_PROGRESS, 4, 1),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("takeover", sorted(TAKEOVERS))
@pytest.mark.parametrize("write", sorted(WORKER_WRITES))
def test_a_claim_lost_after_the_worker_read_its_task_is_still_fenced_off(write, takeover):
    """The worker reads its task before its write transaction. A claim lost in between (a
    person cancelled, or the lease ran out and the task was claimed again) still wins: the
    worker's write changes nothing."""
    Worker.objects.get_or_create(worker_id="@qa-1", defaults={"lane": "qa", "capacity_limit": 2})
    submit()
    task = claim()
    move, status, history_rows, still_active = TAKEOVERS[takeover]
    has_read, taken_over = threading.Event(), threading.Event()
    outcome: list[object] = []

    def pause_after_reading_the_task(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("SELECT") and " FROM tasks " in sql and not has_read.is_set():
            has_read.set()
            taken_over.wait(30)
        return result

    def worker() -> None:
        try:
            with connection.execute_wrapper(pause_after_reading_the_task):
                WORKER_WRITES[write](task)
            outcome.append("written")
        except Exception as exc:  # noqa: BLE001 - the test asserts which one
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    assert has_read.wait(30), "the worker never read its task"
    move(task)
    rows = state(task)
    taken_over.set()
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost), outcome
    assert f"task {task.pk} is no longer held by @qa-1" in str(outcome[0])
    assert state(task) == rows == (status, history_rows)
    fresh = Task.objects.get(pk=task.pk)
    assert fresh.result == {}
    assert fresh.finished_at is None or status == Status.CANCELLED  # a new attempt is not over
    assert fresh.attempt_count == (1 if takeover == "claimed again" else 0)
    assert active("@qa-1") == still_active


def test_release_gives_the_task_back_without_counting_an_attempt():
    submit()
    task = claim()
    lifecycle.release(task.pk, worker_id="@qa-1", token=task.claim_token, note="shutting down")
    task.refresh_from_db()
    assert (task.status, task.attempt_count, task.worker_id) == ("pending", 0, None)
    assert task.lease_expires_at is None
    last = last_history(task)
    assert (last.to_status, last.actor, last.note) == ("pending", "worker:@qa-1", "shutting down")
    assert active("@qa-1") == 0


def test_requeue_expired_counts_a_failed_attempt_and_fences_the_old_worker():
    submit()
    task = claim()
    assert lifecycle.requeue_expired() == 0  # the lease is still good
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert lifecycle.requeue_expired() == 1
    fresh = Task.objects.get(pk=task.pk)
    assert fresh.status == Status.PENDING
    assert (fresh.attempt_count, fresh.last_error_type) == (1, "lease_expired")
    assert "lease held by @qa-1 expired" in fresh.last_error
    assert fresh.not_before > timezone.now()
    last = last_history(fresh)
    assert (last.from_status, last.to_status, last.actor) == ("in_progress", "pending", "system")
    assert active("@qa-1") == 0
    before = state(fresh)
    with pytest.raises(LeaseLost):
        lifecycle.complete(task.pk, worker_id="@qa-1", token=task.claim_token)
    with pytest.raises(LeaseLost):
        lifecycle.heartbeat(task.pk, worker_id="@qa-1", token=task.claim_token)
    assert state(fresh) == before
    assert lifecycle.requeue_expired() == 0


def test_requeue_expired_on_the_last_attempt_goes_to_dead_letter():
    submit(max_attempts=1)
    task = claim()
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert lifecycle.requeue_expired() == 1
    assert Task.objects.get(pk=task.pk).status == Status.DEAD_LETTER
    assert Notification.objects.filter(task=task, event="dead_letter").count() == len(Platform)


# --- Complete and fail ------------------------------------------------------------------------


def test_complete_without_reviews_completes():
    submit()
    task = finish(claim(), {"summary": "done, see the branch", "branch": "vibe/task-1"})
    assert task.status == Status.COMPLETED
    assert task.result == {"summary": "done, see the branch"}
    assert task.branch == "vibe/task-1"
    assert task.finished_at is not None and task.lease_expires_at is None
    last = last_history(task)
    assert (last.from_status, last.to_status, last.actor) == (
        "in_progress",
        "completed",
        "worker:@qa-1",
    )
    assert active("@qa-1") == 0


def complete_and_claim(task: Task, result: dict | None = None) -> tuple[Task, Task | None]:
    return lifecycle.complete_and_claim(
        task.pk, worker_id=task.worker_id, token=task.claim_token, result=result
    )


def test_complete_and_claim_finishes_one_task_and_takes_the_next_in_one_go():
    first, second = submit("first", priority=90), submit("second", priority=10)
    running = claim()
    assert running.pk == first.pk
    done, following = complete_and_claim(running, {"summary": "shipped"})
    assert done.pk == first.pk and following is not None and following.pk == second.pk
    assert Task.objects.get(pk=first.pk).status == Status.COMPLETED
    fresh = Task.objects.get(pk=second.pk)
    assert (fresh.status, fresh.worker_id, fresh.claim_token) == (
        Status.IN_PROGRESS,
        "@qa-1",
        following.claim_token,
    )
    assert following.lease_expires_at is not None and following.started_at is not None
    assert [(h.from_status, h.to_status) for h in second.history.order_by("id")] == [
        ("", "pending"),
        ("pending", "in_progress"),
    ]
    assert active("@qa-1") == 1 == in_progress_of("@qa-1")
    done, following = complete_and_claim(following)
    assert following is None  # nothing left: the completion stands, no slot is held
    assert Task.objects.get(pk=second.pk).status == Status.COMPLETED
    assert active("@qa-1") == 0 == in_progress_of("@qa-1")


@pytest.mark.parametrize("status", [WorkerStatus.PAUSED, WorkerStatus.DRAINING])
def test_complete_and_claim_by_a_paused_or_draining_worker_only_completes(status):
    submit("first")
    waiting = submit("second")
    running = claim()
    lifecycle.set_worker_status("@qa-1", status, actor="cli")
    done, following = complete_and_claim(running)
    assert following is None
    assert Task.objects.get(pk=done.pk).status == Status.COMPLETED
    assert state(waiting) == (Status.PENDING, 1)
    assert active("@qa-1") == 0


def test_complete_and_claim_keeps_to_capacity():
    for n in range(4):
        submit(f"task {n}")
    one, two = claim(), claim()
    _, following = complete_and_claim(one)
    assert following is not None
    assert active("@qa-1") == 2 == in_progress_of("@qa-1")
    Worker.objects.filter(pk="@qa-1").update(capacity_limit=1)  # a person lowered it meanwhile
    _, following = complete_and_claim(two)
    assert following is None
    assert active("@qa-1") == 1 == in_progress_of("@qa-1")


def test_complete_and_claim_refuses_like_complete_and_claims_nothing():
    audit = task_in(Status.REVIEW_NEEDED).children.get()
    Worker.objects.filter(pk="@security-1").update(capacity_limit=5)
    review = claim("@security-1")
    assert review.pk == audit.pk
    submit("another audit", lane="security")
    before = (state(review), active("@security-1"))
    with pytest.raises(InvalidInput, match="malformed verdict"):
        complete_and_claim(review, {"verdict": "MAYBE"})
    with pytest.raises(LeaseLost):
        lifecycle.complete_and_claim(
            review.pk, worker_id="@security-1", token=review.claim_token + 1
        )
    assert (state(review), active("@security-1")) == before


def test_complete_and_claim_runs_the_pipeline_like_complete():
    submit("build it", lane="backend")
    submit("build more", lane="backend")
    work = claim("@backend-1")
    done, following = complete_and_claim(work, {"summary": "built"})
    assert Task.objects.get(pk=done.pk).status == Status.REVIEW_NEEDED
    audit = Task.objects.get(parent_id=done.pk)
    assert (audit.lane, audit.status) == ("security", Status.PENDING)
    assert following is not None and following.lane == "backend"


def history_in_time_order(task: Task) -> list[tuple[str, str]]:
    """The task's moves as the task page lists them: by time (then id)."""
    return [(h.from_status, h.to_status) for h in task.history.order_by("created_at", "id")]


def test_complete_and_claim_stamps_the_claim_after_the_review_it_claims_was_made():
    # Security-lane work reviewed by the security lane: finishing it spawns a review that the
    # same transaction then claims.
    submit("harden the login", lane="security", pipeline="backend")
    work = claim("@security-1")
    _, following = complete_and_claim(work, {"summary": "done"})
    assert following is not None and following.parent_id == work.pk
    review = Task.objects.get(pk=following.pk)
    assert history_in_time_order(review) == [("", "pending"), ("pending", "in_progress")]
    assert review.started_at >= review.created_at


@contextmanager
def writers_held_up():
    """Hold up every other writer of the test database: on SQLite the writers' queue (this
    thread's own handle, which its own lifecycle calls pass through and then release), on
    PostgreSQL the worker @qa-1's row, until this thread's transaction commits."""
    if connection.vendor == "sqlite":
        fd = sqlite.writer_queue_fd(connection.settings_dict["NAME"])
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)  # already released by a lifecycle call inside
    else:
        with transaction.atomic():
            Worker.objects.select_for_update().get(pk="@qa-1")
            yield


@pytest.mark.django_db(transaction=True)
def test_a_claim_that_waited_for_another_writer_is_stamped_after_it():
    Worker.objects.get_or_create(worker_id="@qa-1", defaults={"lane": "qa", "capacity_limit": 2})
    submit("older and less urgent", priority=10)
    claimed: list[Task] = []

    def worker() -> None:
        try:
            claimed.append(lifecycle.claim_next("@qa-1"))
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    with writers_held_up():
        thread.start()
        time.sleep(0.5)  # the claim is now waiting for the lock
        urgent = submit("arrived while the claim waited", priority=90)
    thread.join(30)
    assert claimed and claimed[0].pk == urgent.pk
    assert history_in_time_order(urgent) == [("", "pending"), ("pending", "in_progress")]
    assert Task.objects.get(pk=urgent.pk).started_at >= urgent.created_at


def test_fail_backs_off_exponentially_then_dead_letters():
    submit(max_attempts=3)
    base = settings.VIBE_RETRY_BASE_SECONDS
    for attempt in (1, 2):
        task = claim()
        before = timezone.now()
        lifecycle.fail(
            task.pk, worker_id="@qa-1", token=task.claim_token, error_type="agent_exit", error="E1"
        )
        task.refresh_from_db()
        assert task.status == Status.PENDING
        assert (task.attempt_count, task.last_error_type, task.last_error) == (
            attempt,
            "agent_exit",
            "E1",
        )
        assert task.worker_id is None
        delay = (task.not_before - before).total_seconds()
        ceiling = base * 2 ** (attempt - 1)
        assert ceiling * 0.5 - 1 <= delay <= ceiling + 1, (attempt, delay)
        assert f"attempt {attempt}/3 failed (agent_exit); retrying in" in last_history(task).note
        assert lifecycle.claim_next("@qa-1") is None  # still backing off
        make_due(task)
    task = claim()
    lifecycle.fail(task.pk, worker_id="@qa-1", token=task.claim_token, error_type="agent_exit")
    task.refresh_from_db()
    assert (task.status, task.attempt_count) == (Status.DEAD_LETTER, 3)
    last = last_history(task)
    assert (last.to_status, last.actor, last.note) == (
        "dead_letter",
        "worker:@qa-1",
        "attempt 3/3 failed (agent_exit)",
    )
    notes = Notification.objects.filter(task=task)
    assert sorted(notes.values_list("channel", flat=True)) == sorted(Platform.values)
    assert set(notes.values_list("event", flat=True)) == {"dead_letter"}
    assert task.history.count() == 1 + 3 * 2


@pytest.mark.parametrize("error_type", ["agent_missing", "config_error", "workspace_error"])
def test_errors_not_worth_retrying_go_straight_to_dead_letter_with_a_hint(error_type):
    submit(max_attempts=5)
    task = claim()
    lifecycle.fail(task.pk, worker_id="@qa-1", token=task.claim_token, error_type=error_type)
    task.refresh_from_db()
    assert (task.status, task.attempt_count, task.last_error_type) == (
        "dead_letter",
        1,
        error_type,
    )
    hint = error_hint(error_type)
    assert hint and "retry" in hint
    assert last_history(task).note == f"{error_type} is not worth retrying: {hint}"


def test_fail_with_an_unknown_error_type_changes_nothing():
    submit()
    task = claim()
    before = state(task)
    with pytest.raises(
        InvalidInput, match="unknown error type 'oops'; use one of agent_auth, agent_exit"
    ):
        lifecycle.fail(task.pk, worker_id="@qa-1", token=task.claim_token, error_type="oops")
    assert state(task) == before
    assert active("@qa-1") == 1


def test_fail_keeps_only_the_tail_of_a_huge_error():
    submit()
    task = claim()
    error = "start " + "x" * 30_000 + " the end"
    lifecycle.fail(
        task.pk, worker_id="@qa-1", token=task.claim_token, error_type="agent_exit", error=error
    )
    task.refresh_from_db()
    assert len(task.last_error) == lifecycle.MAX_ERROR_LENGTH
    assert task.last_error.endswith(" the end")


# --- Retry and cancel -------------------------------------------------------------------------


def test_retry_moves_dead_letter_task_to_pending_with_fresh_attempts():
    task = task_in(Status.DEAD_LETTER)
    lifecycle.retry(task.pk, actor="slack:U123")
    task.refresh_from_db()
    assert (task.status, task.attempt_count, task.not_before, task.worker_id) == (
        "pending",
        0,
        None,
        None,
    )
    last = last_history(task)
    assert (last.from_status, last.to_status, last.actor) == (
        "dead_letter",
        "pending",
        "slack:U123",
    )
    assert claim().pk == task.pk


def test_retrying_twice_changes_the_task_once():
    task = task_in(Status.DEAD_LETTER)
    lifecycle.retry(task.pk, actor="user:alice")
    rows = task.history.count()
    with pytest.raises(IllegalTransition, match=f"task {task.pk} is pending; only dead letter"):
        lifecycle.retry(task.pk, actor="user:otto")
    assert task.history.count() == rows


@pytest.mark.django_db(transaction=True)
def test_two_people_retrying_at_once_cause_exactly_one_change():
    # Another transactional test may have flushed the migration's rows before this one.
    Worker.objects.get_or_create(worker_id="@qa-1", defaults={"lane": "qa", "capacity_limit": 2})
    task = task_in(Status.DEAD_LETTER)
    rows = task.history.count()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def person(name: str) -> None:
        try:
            barrier.wait()
            lifecycle.retry(task.pk, actor=f"user:{name}")
            outcomes.append("retried")
        except IllegalTransition:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=person, args=(f"p{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["refused", "refused", "refused", "retried"]
    assert task.history.count() == rows + 1
    assert Task.objects.get(pk=task.pk).status == Status.PENDING


def test_cancel_of_a_running_task_frees_the_worker_and_fences_it():
    submit()
    task = claim()
    lifecycle.cancel(task.pk, actor="discord:42")
    fresh = Task.objects.get(pk=task.pk)
    assert fresh.status == Status.CANCELLED and fresh.lease_expires_at is None
    assert last_history(fresh).actor == "discord:42"
    assert active("@qa-1") == 0
    with pytest.raises(LeaseLost, match="it is cancelled"):
        lifecycle.complete(task.pk, worker_id="@qa-1", token=task.claim_token)


def test_cancel_of_a_parent_cancels_its_open_reviews():
    parent = task_in(Status.REVIEW_NEEDED)
    review = parent.children.get()
    assert (review.status, review.lane) == (Status.PENDING, "security")
    running = claim("@security-1")
    assert running.pk == review.pk
    lifecycle.cancel(parent.pk, actor="user:alice")
    review.refresh_from_db()
    assert review.status == Status.CANCELLED
    last = last_history(review)
    assert (last.from_status, last.actor, last.note) == (
        "in_progress",
        "user:alice",
        f"cancelled with task #{parent.pk}",
    )
    assert active("@security-1") == 0
    assert Task.objects.get(pk=parent.pk).status == Status.CANCELLED
    assert last_history(parent).from_status == Status.REVIEW_NEEDED


def test_cancelling_the_review_a_task_waits_for_blocks_the_task_for_a_person():
    parent = task_in(Status.REVIEW_NEEDED)
    review = parent.children.get()
    rows = parent.history.count()
    lifecycle.cancel(review.pk, actor="user:alice")
    parent.refresh_from_db()
    assert parent.status == Status.BLOCKED
    assert parent.last_error_type == "review_cancelled"
    assert parent.history.count() == rows + 1
    last = last_history(parent)
    assert (last.from_status, last.actor) == ("review_needed", "user:alice")
    assert f"security audit #{review.pk} was cancelled" in last.note
    assert Notification.objects.filter(task=parent, event="blocked").count() == len(Platform)
    lifecycle.retry(parent.pk, actor="user:alice")  # a person sends it round again
    assert Task.objects.get(pk=parent.pk).status == Status.PENDING


def test_cancelling_a_finished_rounds_review_leaves_the_task_alone():
    parent = task_in(Status.REVIEW_NEEDED)
    audit = claim("@security-1")
    finish(audit, {"verdict": "PASS"})
    parent.refresh_from_db()
    assert parent.pipeline_step == 1  # on to QA
    with pytest.raises(IllegalTransition):
        lifecycle.cancel(audit.pk, actor="cli")  # completed: nothing to cancel
    qa = parent.children.get(lane="qa")
    lifecycle.cancel(qa.pk, actor="cli")
    assert Task.objects.get(pk=parent.pk).status == Status.BLOCKED


# --- Workers ----------------------------------------------------------------------------------


def test_pause_and_resume_a_worker():
    worker = lifecycle.pause_worker("@qa-1", actor="user:otto")
    assert worker.status == Worker.objects.get(pk="@qa-1").status == WorkerStatus.PAUSED
    with pytest.raises(IllegalTransition, match="worker @qa-1 is already paused"):
        lifecycle.pause_worker("@qa-1", actor="user:otto")
    lifecycle.resume_worker("@qa-1", actor="user:otto")
    assert Worker.objects.get(pk="@qa-1").status == WorkerStatus.ONLINE


def test_worker_status_refuses_nonsense():
    with pytest.raises(WorkerNotFound, match="worker @ghost does not exist"):
        lifecycle.pause_worker("@ghost", actor="cli")
    with pytest.raises(InvalidInput, match="unknown worker status 'asleep'"):
        lifecycle.set_worker_status("@qa-1", "asleep", actor="cli")
    with pytest.raises(InvalidInput, match="needs an actor"):
        lifecycle.pause_worker("@qa-1", actor="")
    assert Worker.objects.get(pk="@qa-1").status == WorkerStatus.ONLINE


def test_worker_heartbeat_makes_it_alive():
    worker = Worker.objects.get(pk="@qa-1")
    assert worker.display_status == WorkerStatus.OFFLINE  # never heartbeated
    lifecycle.worker_heartbeat("@qa-1")
    worker.refresh_from_db()
    assert worker.is_alive and worker.display_status == WorkerStatus.ONLINE


# --- SQLite checkpoints -----------------------------------------------------------------------


def _goals_in_the_database_file_alone(tmp_path) -> set[str]:
    """What a reader of the main database file sees without its WAL: what was checkpointed."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(connection.settings_dict["NAME"], copy)
    with closing(sqlite3.connect(copy)) as db:
        return {goal for (goal,) in db.execute("SELECT goal FROM tasks")}


@pytest.mark.skipif(connection.vendor != "sqlite", reason="WAL checkpoints are SQLite's")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("every, folded_in", [(1, True), (1_000_000, False)])
def test_the_lifecycle_folds_the_wal_into_the_database_every_so_many_commits(
    settings, tmp_path, every, folded_in
):
    """Checkpoints run after the writers' queue has moved on, every N lifecycle commits; a
    commit in between leaves its pages in the WAL (SQLite's own checkpoint is set far higher)."""
    settings.VIBE_SQLITE_CHECKPOINT_EVERY = every
    submit("checkpoint me")
    assert ("checkpoint me" in _goals_in_the_database_file_alone(tmp_path)) is folded_in


def test_writers_queue_handles_of_finished_threads_are_closed(tmp_path):
    """runserver starts a thread per request; each lifecycle write there opened the lock file
    and never closed it, until the process ran out of file descriptors."""
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        pytest.skip("needs /proc to count open files")
    path = str(tmp_path / "vibe.db")

    def open_handles() -> int:
        count = 0
        for name in os.listdir(fd_dir):
            with suppress(OSError):  # closed while listing
                count += os.readlink(f"{fd_dir}/{name}") == f"{path}-writers"
        return count

    def one_request() -> None:
        assert sqlite.writer_queue_fd(path) is not None

    for _ in range(20):
        thread = threading.Thread(target=one_request)
        thread.start()
        thread.join()
    gc.collect()
    assert open_handles() == 0


def test_every_move_names_itself_in_its_history_row():
    """The history says what each move was, and the error type it recorded, in columns."""
    task = submit(max_attempts=1)
    claimed = claim()
    lifecycle.fail(task.pk, worker_id="@qa-1", token=claimed.claim_token, error_type="timeout")
    lifecycle.retry(task.pk, actor="user:alice")
    again = claim()
    lifecycle.release(task.pk, worker_id="@qa-1", token=again.claim_token)
    again = claim()
    finish(again)
    other = submit("cancel me")
    lifecycle.cancel(other.pk, actor="cli")
    rows = TaskHistory.objects.filter(task_id=task.pk).order_by("id")
    assert [(r.event, r.error_type) for r in rows] == [
        ("submitted", ""),
        ("claimed", ""),
        ("failed", "timeout"),
        ("retried", ""),
        ("claimed", ""),
        ("released", ""),
        ("claimed", ""),
        ("completed", ""),
    ]
    assert last_history(other).event == "cancelled"
