"""Workers outlive their database, and a task never has two agents: real workers, real outages.

The agents log their own start, ticks and end (task, attempt, pid, time), so overlaps and
repeats are read from what the agents did, not from what the factory says they did.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import OperationalError, close_old_connections, connection

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task, TaskHistory
from tests.waiting import wait_for
from workers_app import leases, runtime
from workers_app.profiles import command_profile

pytestmark = pytest.mark.django_db(transaction=True)

# Naps as its goal says ("nap 3"), on its first attempt only; logs as it goes.
LOGGING_AGENT = """\
import os, re, sys, time
nap = float(re.search(r"nap (\\d+)", sys.stdin.read()).group(1))
if os.environ["VIBE_TASK_ATTEMPT"] != "1":
    nap = 0.5
def log(what):
    with open(os.environ["TEST_AGENT_LOG"], "a") as fh:
        fh.write(f"{what} {os.environ['VIBE_TASK_ID']} {os.environ['VIBE_TASK_ATTEMPT']} "
                 f"{os.getpid()} {time.time():.3f}\\n")
log("start")
deadline = time.monotonic() + nap
while time.monotonic() < deadline:
    time.sleep(0.1)
    log("tick")
log("end")
"""


def submit(goal: str) -> Task:
    return lifecycle.submit(goal, lane="backend", pipeline="none", actor="cli")


def reload(task: Task) -> Task:
    return Task.objects.get(pk=task.pk)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class AgentLog:
    """What the agents wrote: per task, its runs as (attempt, pid, start, last seen, ended)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def runs(self) -> dict[int, list[dict]]:
        runs: dict[tuple[int, int], dict] = {}
        text = self.path.read_text() if self.path.exists() else ""
        for line in text.splitlines():
            what, task_id, attempt, pid, at = line.split()
            run = runs.setdefault(
                (int(task_id), int(pid)),
                {"attempt": int(attempt), "pid": int(pid), "start": None, "ended": False},
            )
            if what == "start":
                run["start"] = float(at)
            run["last"] = float(at)
            run["ended"] = run["ended"] or what == "end"
        by_task: dict[int, list[dict]] = {}
        for (task_id, _), run in sorted(runs.items(), key=lambda item: item[1]["last"]):
            by_task.setdefault(task_id, []).append(run)
        return by_task

    def started(self, task: Task) -> list[dict]:
        return self.runs().get(task.pk, [])


@pytest.fixture
def agent_log(tmp_path) -> AgentLog:
    return AgentLog(tmp_path / "agents.log")


@pytest.fixture
def agent_flags(tmp_path, agent_log) -> tuple[list[str], dict[str, str]]:
    script = tmp_path / "agent.py"
    script.write_text(LOGGING_AGENT)
    env = {"VIBE_AGENT_SANDBOX": "off", "TEST_AGENT_LOG": str(agent_log.path)}
    return ["--agent-command", f"{sys.executable} {script}"], env


def start(fleet, worker_id: str, agent_flags, *flags: str, env: dict | None = None):
    command, agent_env = agent_flags
    return fleet.start_plain(
        [worker_id, "--lane", "backend", *flags, *command], env={**agent_env, **(env or {})}
    )


def assert_each_ran_once_and_completed(tasks: list[Task], agent_log: AgentLog) -> None:
    runs = agent_log.runs()
    for task in tasks:
        current = reload(task)
        assert (current.status, current.attempt_count) == (Status.COMPLETED, 0), current.pk
        assert [run["ended"] for run in runs[task.pk]] == [True], runs[task.pk]  # once, whole
        assert list(Run.objects.filter(task=task).values_list("outcome", flat=True)) == [
            "completed"
        ]
        claims = TaskHistory.objects.filter(task=task, to_status=Status.IN_PROGRESS)
        assert claims.count() == 1
    assert not TaskHistory.objects.filter(note__contains="lease_expired").exists()


def stop(*workers) -> None:
    for worker in workers:
        assert worker.proc.poll() is None, f"{worker.worker_id} exited:\n{worker.output()}"
        worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(60) == 0, worker.output()


# --- outages ----------------------------------------------------------------------------------


def busy_fleet(fleet, agent_flags, agent_log, *flags, env=None):
    """Two workers of capacity 2, eight 3-second tasks; returns when four agents run."""
    tasks = [submit(f"Outage work {i}, nap 3") for i in range(8)]
    workers = [
        start(fleet, f"@backend-{n}", agent_flags, "--capacity", "2", *flags, env=env)
        for n in (1, 2)
    ]
    wait_for(lambda: len(agent_log.runs()) >= 4, timeout=30, what="four agents at work")
    return tasks, workers


@pytest.mark.slow
@pytest.mark.skipif("connection.vendor != 'sqlite'")
def test_workers_outlive_a_sqlite_lock_past_the_busy_timeout(fleet, agent_flags, agent_log):
    """The database file is write-locked for 12 s, more than twice the busy timeout, while
    four agents run and finish: no worker exits, every finished run is recorded as completed
    once the lock is gone, and no task runs twice."""
    env = {"VIBE_SQLITE_BUSY_TIMEOUT_MS": "5000"}
    tasks, workers = busy_fleet(fleet, agent_flags, agent_log, "--lease", "40", env=env)
    lock = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        locked = time.time()
        time.sleep(12)
        assert all(worker.proc.poll() is None for worker in workers)
    finally:
        lock.rollback()
        lock.close()
        unlocked = time.time()
    wait_for(
        lambda: all(reload(task).status == Status.COMPLETED for task in tasks),
        timeout=90,
        what="every task completed",
    )
    ended_while_locked = [
        run for runs in agent_log.runs().values() for run in runs if locked < run["last"] < unlocked
    ]
    assert len(ended_while_locked) >= 2  # their reports waited out the lock
    assert_each_ran_once_and_completed(tasks, agent_log)
    output = "\n".join(worker.output() for worker in workers)
    assert "database is locked" in output and "working again after" in output
    stop(*workers)


def _maintenance_connection():
    import psycopg

    db = connection.settings_dict
    return psycopg.connect(
        dbname="postgres",
        user=db.get("USER") or "postgres",
        password=db.get("PASSWORD") or None,
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
        autocommit=True,
    )


@pytest.mark.slow
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_workers_outlive_a_postgresql_outage(fleet, agent_flags, agent_log):
    """No connection to the test database for 10 s (new ones refused, open ones terminated)
    while four agents run and finish: no worker exits, every finished run is recorded as
    completed after the outage, and no task runs twice."""
    tasks, workers = busy_fleet(fleet, agent_flags, agent_log, "--lease", "40")
    name = connection.settings_dict["NAME"]
    admin = _maintenance_connection()
    try:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        down = time.time()
        time.sleep(10)
        assert all(worker.proc.poll() is None for worker in workers)
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
        up = time.time()
    connection.close()  # ours was terminated too
    wait_for(
        lambda: all(reload(task).status == Status.COMPLETED for task in tasks),
        timeout=90,
        what="every task completed",
    )
    ended_while_down = [
        run for runs in agent_log.runs().values() for run in runs if down < run["last"] < up
    ]
    assert len(ended_while_down) >= 2  # their reports waited out the outage
    assert_each_ran_once_and_completed(tasks, agent_log)
    assert "working again after" in "\n".join(worker.output() for worker in workers)
    stop(*workers)


# --- one agent per task -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_stopped_workers_agent_is_gone_in_seconds_and_never_meets_the_next(
    fleet, agent_flags, agent_log
):
    """SIGSTOP a worker mid-run: its agent's fence stops the agent within FENCE_STALL_SECONDS,
    long before the lease runs out; the next attempt starts only after the lease ran out, and
    the two agents never overlap (from their own timestamps). Resumed, the stopped worker
    records its run as lease_lost and goes on."""
    lease = 20
    task = submit("Long work, nap 60")
    first = start(fleet, "@backend-1", agent_flags, "--lease", str(lease))
    wait_for(lambda: agent_log.started(task), timeout=30, what="the first agent")
    time.sleep(1.0)
    pid = agent_log.started(task)[0]["pid"]
    first.proc.send_signal(signal.SIGSTOP)
    stopped = time.time()
    try:
        second = start(fleet, "@backend-2", agent_flags, "--lease", str(lease))
        wait_for(lambda: not alive(pid), timeout=leases.FENCE_STALL_SECONDS + 5, what="stop")
        gone = time.time()
        wait_for(lambda: reload(task).status == Status.COMPLETED, timeout=60, what="the retry")
    finally:
        first.proc.send_signal(signal.SIGCONT)
    old, new = agent_log.started(task)
    assert (old["pid"], old["ended"], new["ended"]) == (pid, False, True)
    print(f"stopped worker's agent gone {gone - stopped:.2f}s after SIGSTOP")  # noqa: T201
    assert old["last"] - stopped < leases.FENCE_STALL_SECONDS + 1.5
    assert old["last"] < new["start"], (old, new)  # never two agents at once
    assert reload(task).worker_id == "@backend-2" and reload(task).attempt_count == 1
    old_run = wait_for(lambda: Run.objects.filter(task=task, worker_id="@backend-1").first())
    wait_for(lambda: Run.objects.get(pk=old_run.pk).outcome == "lease_lost", timeout=10)
    stop(first, second)


@pytest.mark.slow
def test_a_cancelled_tasks_agent_is_gone_within_seconds(fleet, agent_flags, agent_log):
    """With the default lease (renewed every 40 s), a cancel stops the agent within about a
    second (at once on PostgreSQL); the run is recorded as cancelled and nothing is reported."""
    tasks = [submit(f"To be cancelled {i}, nap 60") for i in range(3)]
    worker = start(fleet, "@backend-1", agent_flags, "--capacity", "3")
    wait_for(lambda: len(agent_log.runs()) == 3, timeout=30, what="three agents")
    took = []
    for task in tasks:
        pid = agent_log.started(task)[0]["pid"]
        lifecycle.cancel(task.pk, actor="user:alice")
        cancelled = time.monotonic()
        wait_for(lambda pid=pid: not alive(pid), timeout=10, what="the agent's stop")
        took.append(time.monotonic() - cancelled)
    print(f"cancelled agents gone after {', '.join(f'{t:.2f}s' for t in took)}")  # noqa: T201
    assert max(took) < 3.0, took
    for task in tasks:
        run = wait_for(lambda task=task: Run.objects.filter(task=task, outcome="cancelled").first())
        assert run.finished_at is not None
        current = reload(task)
        assert current.status == Status.CANCELLED and current.result == {}
    assert all(not run["ended"] for runs in agent_log.runs().values() for run in runs)
    stop(worker)


# --- a report whose answer was lost ----------------------------------------------------------


def agent_ran(worker: runtime.WorkerLoop, task_id: int) -> None:
    """Step the loop until the task's agent has started (off-loop prep) and exited."""

    def exited() -> bool:
        process = worker.slots[task_id].process
        if process is not None and process.poll():
            return True
        worker._collect_prepared()
        return False

    wait_for(exited, timeout=20, what="the agent to run", interval=0.02)


def test_a_completion_whose_answer_was_lost_is_not_reported_twice_nor_lost(monkeypatch):
    """complete_and_claim commits, then the connection breaks before the worker hears of it:
    the worker tries again, learns the completion had landed, keeps the run `completed`, and
    gives back the task the lost answer had claimed for it."""
    first = submit("First, nap 0")
    second = submit("Second, nap 0")
    worker = runtime.WorkerLoop("@backend-1", profile=command_profile("true"))
    task = lifecycle.claim_next("@backend-1")
    worker._start(task)
    worker.claimed = 1
    agent_ran(worker, first.pk)
    real = lifecycle.complete_and_claim

    def committed_then_lost(*args, **kwargs):
        real(*args, **kwargs)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(lifecycle, "complete_and_claim", committed_then_lost)
    with pytest.raises(OperationalError):
        worker._collect_finished()
    assert first.pk in worker.slots  # its ending is kept, to be reported again
    close_old_connections()
    worker.max_tasks = 1  # claims nothing more, so the released task stays to be seen
    worker._tick()  # the stray claim is given back, the report tried again
    assert worker.slots == {}
    assert reload(first).status == Status.COMPLETED
    assert Run.objects.get(task=first).outcome == "completed"
    fresh = reload(second)
    assert (fresh.status, fresh.attempt_count, fresh.worker_id) == (Status.PENDING, 0, None)
    assert TaskHistory.objects.filter(task=second).last().note.startswith("released: claimed")
    # Nothing was recorded twice.
    assert TaskHistory.objects.filter(task=first, to_status=Status.COMPLETED).count() == 1


def test_a_report_refused_by_the_database_is_kept_and_lands_later(monkeypatch):
    first = submit("First, nap 0")
    worker = runtime.WorkerLoop("@backend-1", profile=command_profile("true"), max_tasks=1)
    worker._claim_while_room()
    agent_ran(worker, first.pk)

    real, refusals = lifecycle.complete, []

    def locked(*args, **kwargs):
        if len(refusals) < 3:
            refusals.append(args)
            raise OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "complete", locked)
    for _ in range(3):  # the database refuses it again and again: nothing is lost
        with pytest.raises(OperationalError):
            worker._collect_finished()
        assert worker.slots[first.pk].ending.outcome == "completed"
        assert reload(first).status == Status.IN_PROGRESS
    worker._collect_finished()
    assert worker.slots == {}
    assert reload(first).status == Status.COMPLETED and reload(first).attempt_count == 0
    assert Run.objects.get(task=first).outcome == "completed"


def test_an_idle_worker_survives_a_failing_reaper(monkeypatch):
    """The fault that used to end the process: the idle wait's reap raising."""
    calls = []

    def failing(**kwargs):
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise OperationalError("database is locked")
        return 0

    monkeypatch.setattr(lifecycle, "requeue_expired", failing)
    monkeypatch.setattr(runtime, "REAP_SECONDS", 0.0)
    worker = runtime.WorkerLoop("@backend-1", profile=command_profile("true"), interval=0.01)

    def stop_after_recovering() -> None:
        wait_for(lambda: len(calls) >= 4, timeout=20, what="reaps")
        worker.request_stop()

    threading.Thread(target=stop_after_recovering, daemon=True).start()
    assert worker.run() == 0
    assert calls[1] - calls[0] >= runtime.FAULT_FIRST_PAUSE * 0.8  # paused, not spinning
