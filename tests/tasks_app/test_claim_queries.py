"""The claim → complete path's statements, pinned: a change that adds a query fails here first.

And the claimable rule, said once in SQL (`lifecycle._sql.CLAIMABLE_SQL`, measured) and once
in the ORM (`TaskQuerySet.claimable`): the two must pick the same task from the same rows.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.lifecycle import _sql
from tasks_app.models import Task

pytestmark = pytest.mark.django_db

# Per call and vendor: (queries through Django's cursor, statements on the driver's own
# cursor). The driver's statements (`_sql.statements`) bypass Django's query log, so they are
# counted by a spy on the driver cursor; together they are every statement the call runs.
# Django's count includes the savepoint and its release (a test runs in a transaction):
# claim_next takes a slot, claims, writes history; complete reads the task, then
# compare-and-swaps, writes history, gives the slot back.
QUERIES = {
    "sqlite": {
        "claim_next": (2, 3),
        "heartbeat": (3, 0),
        "complete": (3, 3),
        "complete_and_claim": (3, 6),
    },
    "postgresql": {
        "claim_next": (2, 3),
        "heartbeat": (3, 0),
        "complete": (3, 3),
        "complete_and_claim": (3, 6),
    },
}


def expected(call: str) -> tuple[int, int]:
    return QUERIES[connection.vendor][call]


@pytest.fixture
def pinned(django_assert_num_queries, monkeypatch):
    """`with pinned("claim_next"):` fails unless the call runs exactly its pinned statements."""
    real = _sql._DriverCursor.execute
    driver: list[str] = []

    def spy(self, sql, params=()):
        driver.append(sql)
        return real(self, sql, params)

    monkeypatch.setattr(_sql._DriverCursor, "execute", spy)

    @contextmanager
    def check(call: str):
        django_queries, driver_statements = expected(call)
        driver.clear()
        with django_assert_num_queries(django_queries):
            yield
        assert len(driver) == driver_statements, driver

    return check


def submit(goal: str = "write the changelog", **kwargs) -> Task:
    return lifecycle.submit(goal, lane="qa", actor="cli", **kwargs)


def test_claim_next_runs_its_pinned_statements(pinned):
    submit()
    with pinned("claim_next"):
        assert lifecycle.claim_next("@qa-1") is not None


def test_heartbeat_runs_its_pinned_statements(pinned):
    submit()
    task = lifecycle.claim_next("@qa-1")
    with pinned("heartbeat"):
        lifecycle.heartbeat(task.pk, worker_id="@qa-1", token=task.claim_token)


def test_complete_runs_its_pinned_statements(pinned):
    submit()
    task = lifecycle.claim_next("@qa-1")
    with pinned("complete"):
        lifecycle.complete(task.pk, worker_id="@qa-1", token=task.claim_token)


def test_complete_and_claim_runs_its_pinned_statements(pinned):
    submit("first")
    submit("second")
    task = lifecycle.claim_next("@qa-1")
    with pinned("complete_and_claim"):
        done, following = lifecycle.complete_and_claim(
            task.pk, worker_id="@qa-1", token=task.claim_token
        )
    assert (done.status, following.goal) == (Status.COMPLETED, "second")


def test_the_raw_claim_and_the_querysets_claimable_pick_the_same_tasks():
    """Lanes, statuses, backoff, prerequisites and priority all in play; each claim is the
    queryset's first, until both say nothing is left."""
    now = timezone.now()
    done_first = submit("a prerequisite that completes")
    unfinished = submit("a prerequisite still pending", priority=1)
    submit("waits for the completed one", priority=60, depends_on=[done_first.pk])
    submit("waits for the unfinished one", priority=90, depends_on=[unfinished.pk])
    backing_off = submit("backing off", priority=95)
    Task.objects.filter(pk=backing_off.pk).update(not_before=now + timedelta(hours=1))
    due = submit("its backoff is over", priority=40)
    Task.objects.filter(pk=due.pk).update(not_before=now - timedelta(seconds=1))
    lifecycle.submit("another lane", lane="backend", actor="cli", priority=100)
    submit("high risk, awaiting approval", risk="high", priority=100)
    claimed = []
    while True:
        first = Task.objects.claimable("qa").first()
        task = lifecycle.claim_next("@qa-1")
        assert (task and task.pk) == (first and first.pk)
        if task is None:
            break
        claimed.append(task.goal)
        lifecycle.complete(task.pk, worker_id="@qa-1", token=task.claim_token)
    assert "backing off" not in claimed and "another lane" not in claimed
    assert claimed.index("a prerequisite that completes") < claimed.index(
        "waits for the completed one"
    )
    assert claimed[-1] == "waits for the unfinished one"
