"""What a worker does when an agent finishes and the same transaction claimed its next task.

The worker runs in this process (its loop stepped by hand), with a real agent process (`true`);
the moment a signal or a database fault strikes is set with Django's execute_wrapper hook.
"""

from __future__ import annotations

import signal

import pytest
from django.db import connection

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task, TaskHistory
from tests.waiting import wait_for
from workers_app import runtime
from workers_app.profiles import command_profile

# Committed rows, as in a real worker: a failed statement inside a test's transaction would
# poison the rest of it, which autocommit (how workers run) never does.
pytestmark = pytest.mark.django_db(transaction=True)


def started(worker: runtime.WorkerLoop, task_id: int):
    """Step the loop until the task's worktree is ready and its agent runs (off-loop prep)."""

    def agent_runs() -> bool:
        if worker.slots[task_id].process is not None:
            return True
        worker._collect_prepared()
        return False

    wait_for(agent_runs, timeout=20, what="the agent to start", interval=0.01)
    return worker.slots[task_id]


def worker_with_a_finished_agent() -> tuple[runtime.WorkerLoop, Task, Task]:
    """A worker whose first task's agent has exited 0, with a second task waiting."""
    first = lifecycle.submit("first", lane="backend", pipeline="none", actor="cli")
    second = lifecycle.submit("second", lane="backend", pipeline="none", actor="cli")
    worker = runtime.WorkerLoop("@backend-1", profile=command_profile("true"))
    task = lifecycle.claim_next("@backend-1")
    assert task.pk == first.pk
    worker._start(task)
    worker.claimed = 1
    slot = started(worker, task.pk)
    wait_for(lambda: slot.process.poll(), timeout=20, what="the agent to finish", interval=0.02)
    return worker, first, second


def test_a_finished_agent_completes_and_the_next_task_starts_in_its_slot():
    worker, first, second = worker_with_a_finished_agent()
    worker._collect_finished()
    assert Task.objects.get(pk=first.pk).status == Status.COMPLETED
    assert list(worker.slots) == [second.pk]
    assert Task.objects.get(pk=second.pk).worker_id == "@backend-1"
    assert worker.claimed == 2
    started(worker, second.pk).process.kill()


def test_a_stop_signal_during_the_completion_starts_nothing_new():
    worker, first, second = worker_with_a_finished_agent()

    def signal_after_reading_the_task(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("SELECT") and " FROM tasks " in sql:
            worker._on_signal(signal.SIGTERM, None)  # arrives inside complete_and_claim
        return result

    with connection.execute_wrapper(signal_after_reading_the_task):
        worker._collect_finished()
    assert worker.stopping
    assert Task.objects.get(pk=first.pk).status == Status.COMPLETED
    assert worker.slots == {}
    fresh = Task.objects.get(pk=second.pk)
    assert (fresh.status, fresh.attempt_count, fresh.worker_id) == (Status.PENDING, 0, None)
    assert TaskHistory.objects.filter(task=second).last().note == "released: worker stopping"


def test_a_fault_starting_the_next_task_is_that_tasks_not_the_completed_ones():
    worker, first, second = worker_with_a_finished_agent()
    first_run = Run.objects.get(task=first)

    def disk_full_on_new_runs(execute, sql, params, many, context):
        if sql.startswith("INSERT INTO") and "task_runs" in sql:
            raise OSError("disk full")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(disk_full_on_new_runs):
        worker._collect_finished()
    assert Task.objects.get(pk=first.pk).status == Status.COMPLETED
    assert Run.objects.get(pk=first_run.pk).outcome == "completed"
    assert worker.slots == {} and worker.claimed == 1
    fresh = Task.objects.get(pk=second.pk)
    assert (fresh.status, fresh.attempt_count, fresh.worker_id) == (Status.PENDING, 0, None)
    last = TaskHistory.objects.filter(task=second).last()
    assert last.note == "released: the worker could not start it"
