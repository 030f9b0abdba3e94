"""Tasks in the states the chat tests need, made through the lifecycle like real ones."""

from __future__ import annotations

from tasks_app import lifecycle
from tasks_app.models import Task
from workers_app.models import Worker


def dead_letter_task(
    worker: Worker, goal: str = "build the login page", error_type: str = "agent_exit"
) -> Task:
    task = lifecycle.submit(goal, lane=worker.lane, actor="cli", max_attempts=1)
    claimed = lifecycle.claim_next(worker)
    assert claimed is not None and claimed.pk == task.pk
    lifecycle.fail(task.pk, worker_id=worker.pk, token=claimed.claim_token, error_type=error_type)
    return Task.objects.get(pk=task.pk)
