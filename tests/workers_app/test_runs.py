"""A run row begins with `Run.start` and is written column by column, never as a whole row."""

from __future__ import annotations

import pytest

from tasks_app import lifecycle
from tasks_app.models import Run

pytestmark = pytest.mark.django_db


def test_a_run_starts_for_the_next_attempt_and_its_writes_leave_other_columns_alone():
    lifecycle.submit("Add rate limiting", lane="backend", actor="cli")
    task = lifecycle.claim_next("@backend-1")
    run = Run.start(
        task, worker_id="@backend-1", agent="c" * 80, kind="claude", role="builder", sandbox="off"
    )
    assert (run.attempt, run.agent, run.argv, run.finished_at) == (1, "c" * 60, [], None)

    Run.objects.filter(pk=run.pk).update(event_count=7)  # the transcript writer's column
    run.record(stdout_tail="working")
    run.close("completed", exit_code=0)

    row = Run.objects.get(pk=run.pk)
    assert (row.event_count, row.stdout_tail, row.outcome, row.exit_code) == (
        7,
        "working",
        "completed",
        0,
    )
    assert row.finished_at is not None and run.finished_at == row.finished_at
    run.mark("lease_lost")
    assert Run.objects.get(pk=run.pk).outcome == "lease_lost"
