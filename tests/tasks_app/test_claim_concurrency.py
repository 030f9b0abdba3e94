"""Claims and people's moves under real concurrency: several processes, one database.

Each test starts real Python processes (this file doubles as their script, see the bottom) that
share the test database through DATABASE_URL, so SQLite's file locking and PostgreSQL's row
locks are what is being tested, not a mock. The same tests run on both databases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parents[2]
LANE = "backend"
PROCESS_TIMEOUT = 180
# Real processes need committed rows; tests/conftest.py puts the default pool back after the flush.
SERIALIZED = pytest.mark.django_db(transaction=True)


def _start(env: dict[str, str], *args: str, start_at: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, "--start-at", repr(start_at)],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _reports(procs: list[subprocess.Popen]) -> list[dict]:
    """Wait for every process; each prints one JSON report as its last line."""
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        assert proc.returncode == 0, f"worker process failed:\n{err[-3000:]}"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def _start_time(processes: int) -> float:
    """A moment every process reaches after Django has set up, so they really start together."""
    return time.time() + 2.0 + 0.4 * processes


# --- claim_next -------------------------------------------------------------------------------


@pytest.mark.slow
@SERIALIZED
def test_many_processes_claim_every_task_exactly_once(subprocess_env):
    from tasks_app import lifecycle
    from tasks_app.choices import Status
    from tasks_app.models import Task, TaskHistory
    from workers_app.models import Worker

    # Five worker rows; the last is shared by two processes, so its capacity is contended too.
    capacities = {"@claim-1": 3, "@claim-2": 3, "@claim-3": 2, "@claim-4": 2, "@claim-5": 3}
    for worker_id, capacity in capacities.items():
        Worker.objects.create(worker_id=worker_id, lane=LANE, capacity_limit=capacity)
    processes = [*capacities, "@claim-5"]

    specs = [
        lifecycle.NewTask(goal=f"task {n}", lane=LANE, priority=n % 7 * 10, pipeline="none")
        for n in range(300)
    ]
    tasks = lifecycle.submit_many(specs, actor="system")
    # A few tasks wait for others: they may only be claimed once those are completed.
    prerequisites = {}
    for dependent, prerequisite in zip(tasks[-20:], tasks[:20], strict=True):
        dependent.depends_on.add(prerequisite)
        prerequisites[dependent.pk] = prerequisite.pk
    all_ids = {t.pk for t in tasks}

    start_at = _start_time(len(processes))
    procs = [_start(subprocess_env, "claim", w, start_at=start_at) for w in processes]
    reports = _reports(procs)

    errors = [e for r in reports for e in r["errors"]]
    assert errors == []  # in particular, no "database is locked"
    claimed = [task_id for r in reports for task_id in r["claimed"]]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert set(claimed) == all_ids
    assert [r for r in reports if r["over_capacity"]] == []

    claims = Counter(
        TaskHistory.objects.filter(
            from_status=Status.PENDING, to_status=Status.IN_PROGRESS
        ).values_list("task_id", flat=True)
    )
    assert set(claims) == all_ids
    assert set(claims.values()) == {1}
    assert set(Task.objects.values_list("status", flat=True)) == {Status.COMPLETED}
    for worker in Worker.objects.filter(pk__in=capacities):
        assert worker.active_tasks == 0, worker.pk

    # Replaying the history in order, no worker ever held more tasks than its capacity.
    held: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    moves = TaskHistory.objects.filter(actor__startswith="worker:").order_by("id")
    claimed_at, completed_at = {}, {}
    for move in moves.values("id", "task_id", "from_status", "to_status", "actor"):
        worker_id = move["actor"].removeprefix("worker:")
        if move["to_status"] == Status.IN_PROGRESS:
            held[worker_id] += 1
            peak[worker_id] = max(peak[worker_id], held[worker_id])
            claimed_at[move["task_id"]] = move["id"]
        elif move["from_status"] == Status.IN_PROGRESS:
            held[worker_id] -= 1
            completed_at[move["task_id"]] = move["id"]
    for worker_id, most in peak.items():
        assert most <= capacities[worker_id], f"{worker_id} held {most} tasks at once"
    assert sum(peak.values()) > len(capacities), "no worker ever held more than one task"
    for dependent, prerequisite in prerequisites.items():
        assert claimed_at[dependent] > completed_at[prerequisite]


def test_claims_follow_the_claimable_queryset_order(db):
    """claim_next's hand-written SQL picks exactly what Task.objects.claimable() lists, in order."""
    from datetime import timedelta

    from django.utils import timezone

    from tasks_app import lifecycle
    from tasks_app.models import Task
    from workers_app.models import Worker

    Worker.objects.create(worker_id="@order", lane=LANE, capacity_limit=100)
    made = [
        lifecycle.submit(f"t{n}", lane=LANE, priority=p, actor="system", pipeline="none")
        for n, p in enumerate([10, 90, 50, 90, 10, 50, 70, 0, 90, 30])
    ]
    same_moment = [made[0].pk, made[4].pk, made[5].pk, made[8].pk]  # ties: then by id
    Task.objects.filter(pk__in=same_moment).update(created_at=made[3].created_at)
    Task.objects.filter(pk=made[1].pk).update(not_before=timezone.now() + timedelta(hours=1))
    Task.objects.filter(pk=made[2].pk).update(not_before=timezone.now() - timedelta(seconds=1))
    made[6].depends_on.add(made[7])  # waits for a task that stays pending
    lifecycle.submit("other lane", lane="frontend", actor="system", pipeline="none")

    expected = list(Task.objects.claimable(LANE).values_list("pk", flat=True))
    claimed = []
    while (task := lifecycle.claim_next("@order")) is not None:
        claimed.append(task.pk)
    assert claimed == expected
    assert made[1].pk not in claimed and made[6].pk not in claimed
    assert len(claimed) == 8


@SERIALIZED
def test_sqlite_writers_queue_on_a_lock_file_beside_the_database(subprocess_env):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the writers' queue is for SQLite only")
    pytest.importorskip("fcntl")
    report = _reports([_start(subprocess_env, "queue", start_at=0.0)])[0]
    assert report == {"inside": True, "after": False, "nested": False}


# --- people racing each other -----------------------------------------------------------------


def _dead_letter_tasks(count: int) -> list[int]:
    from tasks_app import lifecycle
    from workers_app.models import Worker

    Worker.objects.create(worker_id="@race", lane=LANE, capacity_limit=count)
    ids = []
    for n in range(count):
        lifecycle.submit(f"doomed {n}", lane=LANE, actor="system", pipeline="none")
        task = lifecycle.claim_next("@race")
        lifecycle.fail(
            task.pk, worker_id="@race", token=task.claim_token, error_type="config_error"
        )
        ids.append(task.pk)
    return ids


def _race(subprocess_env, action: str, ids: list[int]) -> dict[int, list[dict]]:
    start_at = _start_time(2)
    procs = [
        _start(subprocess_env, action, f"user:person{n}", *map(str, ids), start_at=start_at)
        for n in (1, 2)
    ]
    outcomes: dict[int, list[dict]] = defaultdict(list)
    for report in _reports(procs):
        for outcome in report["outcomes"]:
            outcomes[outcome["task"]].append(outcome)
    return outcomes


def _assert_one_winner(outcomes: dict[int, list[dict]], ids: list[int], allowed: str) -> None:
    for task_id in ids:
        results = outcomes[task_id]
        assert sorted(r["result"] for r in results) == ["IllegalTransition", "ok"], results
        loser = next(r for r in results if r["result"] != "ok")
        assert loser["message"] in {
            f"task {task_id} is pending; only {allowed} tasks can be "
            + ("retried" if "dead" in allowed else "approved"),
            f"task {task_id} changed while you acted (it is now pending); nothing was done",
        }, loser["message"]


@pytest.mark.slow
@SERIALIZED
def test_two_people_retrying_one_task_at_once_change_it_once(subprocess_env):
    from tasks_app.choices import Status
    from tasks_app.models import Task, TaskHistory

    ids = _dead_letter_tasks(5)
    outcomes = _race(subprocess_env, "retry", ids)

    _assert_one_winner(outcomes, ids, "dead letter or blocked")
    for task_id in ids:
        retries = TaskHistory.objects.filter(
            task_id=task_id, from_status=Status.DEAD_LETTER, to_status=Status.PENDING
        )
        assert retries.count() == 1
        assert Task.objects.get(pk=task_id).status == Status.PENDING


@pytest.mark.slow
@SERIALIZED
def test_two_people_approving_one_task_at_once_change_it_once(subprocess_env):
    from tasks_app import lifecycle
    from tasks_app.choices import Status
    from tasks_app.models import Task, TaskHistory

    ids = [
        lifecycle.submit(f"risky {n}", lane=LANE, risk="high", actor="system").pk for n in range(5)
    ]
    outcomes = _race(subprocess_env, "approve", ids)

    _assert_one_winner(outcomes, ids, "awaiting approval")
    for task_id in ids:
        approvals = TaskHistory.objects.filter(
            task_id=task_id, from_status=Status.AWAITING_APPROVAL, to_status=Status.PENDING
        )
        assert approvals.count() == 1
        task = Task.objects.get(pk=task_id)
        assert task.status == Status.PENDING
        assert task.approved_by == approvals.get().actor


# --- The processes: `python test_claim_concurrency.py claim|retry|approve …` ------------------


def _claim_loop(worker_id: str) -> dict:
    """Claim greedily up to capacity, complete what is held, repeat until no work is left."""
    from tasks_app import lifecycle
    from tasks_app.choices import Status
    from tasks_app.models import Task
    from workers_app.models import Worker

    claimed, errors, over_capacity = [], [], []
    held = []
    deadline = time.monotonic() + PROCESS_TIMEOUT - 30
    while time.monotonic() < deadline:
        try:
            task = lifecycle.claim_next(worker_id)
            if task is not None:
                held.append(task)
                claimed.append(task.pk)
                worker = Worker.objects.get(pk=worker_id)
                if worker.active_tasks > worker.capacity_limit:
                    over_capacity.append(worker.active_tasks)
                continue
            if held:
                for task in held:
                    lifecycle.complete(task.pk, worker_id=worker_id, token=task.claim_token)
                held = []
                continue
        except Exception as exc:  # every error is reported to the test, none is hidden
            errors.append(f"{type(exc).__name__}: {exc}")
            if len(errors) > 10:
                break
            continue
        if not Task.objects.filter(status__in=[Status.PENDING, Status.IN_PROGRESS]).exists():
            break
        time.sleep(0.005)  # others hold the prerequisites of what is left
    return {"claimed": claimed, "errors": errors, "over_capacity": over_capacity}


def _people_loop(action: str, actor: str, ids: list[int]) -> dict:
    from tasks_app import lifecycle

    move = {"retry": lifecycle.retry, "approve": lifecycle.approve}[action]
    outcomes = []
    for task_id in ids:
        try:
            move(task_id, actor=actor)
            outcomes.append({"task": task_id, "result": "ok"})
        except lifecycle.LifecycleError as exc:
            outcomes.append({"task": task_id, "result": type(exc).__name__, "message": str(exc)})
    return {"outcomes": outcomes}


def _writers_queue_probe() -> dict:
    """Whether another handle can take the queue's lock: inside, after, and nested atomic()."""
    import fcntl

    from django.db import connection, transaction

    from tasks_app import sqlite

    other = os.open(f"{connection.settings_dict['NAME']}-writers", os.O_RDWR | os.O_CREAT)

    def taken() -> bool:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False

    with sqlite.atomic():
        inside = taken()
    after = taken()
    with transaction.atomic(), sqlite.atomic():
        # An outer transaction already holds SQLite's write lock: waiting could deadlock.
        nested = taken()
    return {"inside": inside, "after": after, "nested": nested}


def _main(argv: list[str]) -> None:
    args, start_at = argv[:-2], float(argv[-1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vibe_project.settings")
    import django

    django.setup()
    from django.db import connection

    connection.ensure_connection()
    time.sleep(max(0.0, start_at - time.time()))
    if args[0] == "claim":
        report = _claim_loop(args[1])
    elif args[0] == "queue":
        report = _writers_queue_probe()
    else:
        report = _people_loop(args[0], args[1], [int(i) for i in args[2:]])
    print(json.dumps(report))


if __name__ == "__main__":
    _main(sys.argv[1:])
