"""VIBE_WORKTREE_SETUP in real worktrees, and leases that stop agents, with real workers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, RunEvent, Task, TaskHistory
from tests.waiting import wait_for
from workers_app import setup, workspace
from workers_app.models import Worker
from workers_app.workspace import instance_id

LEASE = 5  # seconds: heartbeats every third of it

# An agent that logs when it starts and ends (task, pid, time) and naps as its goal says.
LOGGING_AGENT = """\
import os, re, sys, time
nap = float(re.search(r"nap (\\d+)", sys.stdin.read()).group(1))
def log(what):
    with open(os.environ["TEST_AGENT_LOG"], "a") as fh:
        fh.write(f"{what} {os.environ['VIBE_TASK_ID']} {os.getpid()} {time.time():.3f}\\n")
log("start")
time.sleep(nap)
open("out.txt", "w").write("x")
log("end")
"""


def submit(goal: str, **kw) -> Task:
    return lifecycle.submit(goal, lane="backend", actor="cli", **kw)


def reload(task: Task) -> Task:
    return Task.objects.get(pk=task.pk)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text(".deps/\n")
    git(path, "add", ".gitignore")
    git(path, "-c", "user.email=t@example.com", "-c", "user.name=T", "commit", "-q", "-m", "start")
    return path


def git_env(repo: Path, tmp_path: Path, setup: str, **extra: str) -> dict[str, str]:
    return {
        "VIBE_WORKSPACE": str(repo),
        "VIBE_WORKTREES_DIR": str(tmp_path / "trees"),
        "VIBE_WORKTREE_SETUP": setup,
        **extra,
    }


def tree_of(task: Task, tmp_path: Path) -> Path:
    return tmp_path / "trees" / f"{instance_id()}-task-{task.pk}"


def events(run: Run) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run=run).order_by("seq"))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def agents_of(worker, marker: str) -> list[int]:
    """The live processes with TEST_SLEEP=marker besides the worker: once its agent has started,
    that agent (and its sandbox)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        try:
            if pid != worker.proc.pid and f"TEST_SLEEP={marker}".encode() in (
                environ.read_bytes().split(b"\0")
            ):
                found.append(pid)
        except OSError:
            continue
    return [pid for pid in found if alive(pid)]


# --- the setup command ----------------------------------------------------------------------


@pytest.mark.slow
def test_setup_runs_once_in_a_new_worktree_and_its_output_opens_the_transcript(
    fleet, repo, tmp_path
):
    ran = tmp_path / "setups.log"
    setup = (
        f'echo "setting up in $PWD"; echo "settings=$DJANGO_SETTINGS_MODULE"; '
        f'read line || echo "stdin closed"; echo "warning: cache cold" >&2; '
        f"mkdir -p .deps && touch .deps/ready; echo ran >> {ran}"
    )
    env = git_env(repo, tmp_path, setup)
    task = submit("Build on the installed deps")
    # The builder fails unless the setup has run before it, in its own worktree.
    check = "import os, sys; os.path.isfile('.deps/ready') or sys.exit(5); open('a.txt', 'w')"
    builder = f'{sys.executable} -c "{check}"'
    code = fleet.start_plain(
        ["@backend-1", "--lane", "backend", "--once", "--agent-command", builder], env=env
    ).wait(60)
    assert code == 0
    assert reload(task).status == Status.REVIEW_NEEDED, reload(task).last_error
    fleet.run("@security-1", "security", "verdict_agent.py", env={**env, "TEST_VERDICT": "pass"})
    assert Task.objects.get(parent=task, lane="security").status == Status.COMPLETED

    assert ran.read_text() == "ran\n"  # the review reused the worktree: no second setup
    build = Run.objects.get(task=task)
    first, *rest = events(build)
    assert first.kind == "system" and first.data["setup"] == setup
    assert first.text.startswith("VIBE_WORKTREE_SETUP (") and "exited 0 after" in first.text
    lines = [e.text for e in rest if e.data.get("by") == "setup"]
    tree = tree_of(task, tmp_path)
    assert lines == [
        f"setting up in {tree}",
        "settings=vibe_project.settings",  # the worker's environment, not an agent's allowlist
        "stdin closed",
        "warning: cache cold",
    ]
    review = Run.objects.get(task__parent=task, task__lane="security")
    assert not any(e.data.get("by") == "setup" for e in events(review))
    assert not tree.with_name(tree.name + ".setup").exists()


def test_a_failing_setup_is_a_workspace_error_and_the_retry_sets_up_afresh(fleet, repo, tmp_path):
    ran, fixed = tmp_path / "setups.log", tmp_path / "lockfile-fixed"
    setup = (
        f'echo "resolving packages"; echo ran >> {ran}; '
        f'if [ ! -f {fixed} ]; then echo "error: lockfile out of date" >&2; exit 7; fi'
    )
    env = git_env(repo, tmp_path, setup)
    task = submit("Needs its packages", pipeline="none")
    agent = f"{sys.executable} -c \"open('out.txt', 'w').write('x')\""
    fleet.run("@backend-1", "backend", "ok_agent.py", "--agent-command", agent, env=env)
    task = reload(task)
    assert task.status == Status.DEAD_LETTER
    assert task.last_error_type == "workspace_error"
    assert "exited 7" in task.last_error
    assert task.last_error.endswith("resolving packages\nerror: lockfile out of date\n")
    failed = Run.objects.get(task=task)
    assert failed.outcome == "workspace_error" and failed.argv == []  # no agent started
    texts = [e.text for e in events(failed)]
    assert "error: lockfile out of date" in texts and "resolving packages" in texts
    # Nothing half set up is left for the retry to reuse: no worktree, marker, or branch.
    tree = tree_of(task, tmp_path)
    assert not tree.exists() and not tree.with_name(tree.name + ".setup").exists()
    assert git(repo, "branch", "--list", f"vibe/{instance_id()}/*") == ""

    fixed.touch()
    lifecycle.retry(task.pk, actor="user:alice")
    fleet.run("@backend-1", "backend", "ok_agent.py", "--agent-command", agent, env=env)
    task = reload(task)
    assert task.status == Status.COMPLETED, task.last_error
    assert ran.read_text() == "ran\nran\n"
    second = Run.objects.filter(task=task).latest("id")
    assert second.outcome == "completed" and "exited 0 after" in events(second)[0].text
    assert (tree / ".git").exists()


def test_a_setup_past_its_time_limit_is_stopped_with_what_it_started(fleet, repo, tmp_path):
    pidfile = tmp_path / "child.pid"
    setup = f"echo fetching; sleep 60 & echo $! > {pidfile}; wait"
    env = git_env(repo, tmp_path, setup, VIBE_WORKTREE_SETUP_TIMEOUT="1")
    task = submit("Slow to install", pipeline="none")
    started = time.monotonic()
    fleet.run("@backend-1", "backend", env=env)
    assert time.monotonic() - started < 30
    task = reload(task)
    assert task.status == Status.DEAD_LETTER and task.last_error_type == "workspace_error"
    assert "took over 1s and was stopped" in task.last_error and "fetching" in task.last_error
    child = int(pidfile.read_text())
    wait_for(lambda: not alive(child), timeout=5, what="the setup's own child to be stopped")
    assert not tree_of(task, tmp_path).exists()


@pytest.fixture
def in_process(repo, tmp_path, settings, db):
    """`workspace.prepare` in this process, on the test repository."""
    settings.VIBE_WORKSPACE = str(repo)
    settings.VIBE_WORKTREES_DIR = str(tmp_path / "trees")
    return settings


def test_a_worktree_whose_setup_never_finished_is_made_again(in_process, tmp_path):
    ran = tmp_path / "setups.log"
    in_process.VIBE_WORKTREE_SETUP = f"echo ran >> {ran}"
    task = submit("Crashes mid-setup", pipeline="none")
    ws = workspace.prepare(task)
    assert ws.setup.ok and ran.read_text() == "ran\n"
    # The worker died in the setup: the marker is still there, and so is half an install.
    marker = ws.path.with_name(ws.path.name + ".setup")
    marker.write_text(in_process.VIBE_WORKTREE_SETUP)
    (ws.path / "half-installed").touch()
    again = workspace.prepare(task)
    assert again.setup.ok and ran.read_text() == "ran\nran\n"
    assert not (again.path / "half-installed").exists() and not marker.exists()
    reused = workspace.prepare(task)  # set up: reused as it is, no setup
    assert reused.setup is None and reused.path == ws.path and ran.read_text() == "ran\nran\n"


def test_a_setup_is_stopped_when_the_worker_lets_go_of_the_task(in_process, repo):
    in_process.VIBE_WORKTREE_SETUP = "echo installing; sleep 30"
    task = submit("Let go of", pipeline="none")
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(setup.SetupError, match="was stopped") as caught:
        workspace.prepare(task, stop=stop)
    assert time.monotonic() - started < 5
    assert caught.value.setup.stopped and "installing" in caught.value.setup.output
    assert not workspace.worktree_path(task.pk).exists()


def test_setup_never_runs_inside_the_var_folder(in_process):
    in_process.VIBE_WORKTREES_DIR = str(Path(in_process.VAR_DIR) / "trees")
    in_process.VIBE_WORKTREE_SETUP = "true"
    task = submit("Too close to the database", pipeline="none")
    with pytest.raises(workspace.WorkspaceError, match="inside the factory's var folder"):
        workspace.prepare(task)


# --- leases while worktrees are prepared ----------------------------------------------------


@pytest.mark.slow
def test_a_setup_sleeping_past_the_lease_keeps_every_lease_and_each_task_one_agent(
    fleet, repo, tmp_path
):
    """Capacity 2: task A's agent runs while task B's setup sleeps for almost twice the lease.
    A second worker waits to take over any lease that lapses. No lease lapses, A's heartbeats
    go on, and each task has exactly one agent, started once."""
    log = tmp_path / "agents.log"
    agent = tmp_path / "agent.py"
    agent.write_text(LOGGING_AGENT)
    setup = (
        f'echo "setup-start $(git rev-parse --abbrev-ref HEAD) $(date +%s.%N)" >> {log}; '
        'case "$(git rev-parse --abbrev-ref HEAD)" in *slow-setup*) sleep 9;; esac; '
        f'echo "setup-end $(git rev-parse --abbrev-ref HEAD) $(date +%s.%N)" >> {log}'
    )
    env = git_env(
        repo, tmp_path, setup, VIBE_AGENT_SANDBOX="off", TEST_AGENT_LOG=str(log)
    )  # the agent logs outside its worktree
    flags = ["--lane", "backend", "--lease", str(LEASE), "--agent-command"]
    command = f"{sys.executable} {agent}"
    first = submit("Long agent, nap 14", pipeline="none")
    worker = fleet.start_plain(["@backend-1", "--capacity", "2", *flags, command], env=env)
    wait_for(lambda: log.exists() and "\nstart " in f"\n{log.read_text()}", what="the first agent")
    second = submit("Slow setup, nap 1", pipeline="none")
    wait_for(lambda: reload(second).worker_id == "@backend-1", what="the second claim")
    thief = fleet.start_plain(["@backend-2", *flags, command], env=env)  # reaps, would re-run

    samples = []
    deadline = time.monotonic() + 60
    while {reload(first).status, reload(second).status} != {Status.COMPLETED}:
        assert time.monotonic() < deadline, worker.output()
        for task in (first, second):
            current = reload(task)
            if current.status == Status.IN_PROGRESS:
                samples.append(
                    (task.pk, time.monotonic(), timezone.now(), current.lease_expires_at)
                )
        time.sleep(0.1)

    for worker_process in (worker, thief):
        worker_process.proc.send_signal(signal.SIGTERM)
        assert worker_process.wait(30) == 0, worker_process.output()
    assert all(lease > now for _, _, now, lease in samples), "a lease lapsed"
    # A's lease was renewed on time all along, B's setup sleeping past the lease or not.
    renewals, last = [], None
    for task_id, seen, _, lease in samples:
        if task_id == first.pk and lease != last:
            renewals.append(seen)
            last = lease
    gaps = [later - earlier for earlier, later in zip(renewals, renewals[1:], strict=False)]
    assert len(renewals) >= 6 and max(gaps) <= LEASE / 3 + 1.5, gaps

    setups: dict[tuple[str, str], float] = {}
    agents: dict[int, list[tuple[str, float]]] = {}
    for kind, *fields in (line.split() for line in log.read_text().splitlines()):
        if kind.startswith("setup-"):
            branch, at = fields
            setups[kind, branch] = float(at)
        else:
            task_id, _pid, at = fields
            agents.setdefault(int(task_id), []).append((kind, float(at)))
    slow = next(branch for _, branch in setups if "slow-setup" in branch)
    assert setups["setup-end", slow] - setups["setup-start", slow] > LEASE  # past the lease
    # One agent per task, started once, ended once: never two at a time on one task.
    assert {task_id: [k for k, _ in seen] for task_id, seen in agents.items()} == {
        first.pk: ["start", "end"],
        second.pk: ["start", "end"],
    }
    a_start, a_end = (at for _, at in agents[first.pk])
    assert a_start < setups["setup-start", slow] and setups["setup-end", slow] < a_end
    assert agents[second.pk][0][1] > setups["setup-end", slow]  # B's agent after its setup
    for task in (first, second):
        task = reload(task)
        assert task.worker_id == "@backend-1" and task.attempt_count == 0
        claims = TaskHistory.objects.filter(task=task, to_status=Status.IN_PROGRESS)
        assert claims.count() == 1
    assert not TaskHistory.objects.filter(note__contains="lease_expired").exists()
    assert Run.objects.filter(task_id__in=[first.pk, second.pk]).count() == 2


# --- an agent whose lease is gone is stopped ------------------------------------------------


@pytest.mark.slow
def test_an_agent_whose_lease_was_taken_over_is_stopped(fleet, settings):
    settings.VIBE_RETRY_BASE_SECONDS = 0
    Worker.objects.create(worker_id="@backend-2", lane="backend")
    task = submit("Taken over", pipeline="none")
    marker = f"61.{os.getpid()}"  # a TEST_SLEEP no other test uses: finds this agent
    lease = 3
    worker = fleet.start(
        "@backend-1", "backend", "sleep_agent.py", "--lease", str(lease), env={"TEST_SLEEP": marker}
    )
    wait_for(lambda: Run.objects.filter(task=task).exclude(argv=[]).exists(), what="the agent")
    wait_for(lambda: agents_of(worker, marker), what="its process")
    # Its lease runs out (as if its worker had stalled) and another worker claims the task.
    assert lifecycle.requeue_expired(now=timezone.now() + timedelta(minutes=5)) == 1
    taken = lifecycle.claim_next("@backend-2", lease_seconds=600)
    assert taken.pk == task.pk
    lost = time.monotonic()
    wait_for(lambda: not agents_of(worker, marker), timeout=10, what="stop")
    assert time.monotonic() - lost < lease / 3 + 2  # at its worker's next heartbeat
    run = wait_for(lambda: Run.objects.filter(task=task, outcome="lease_lost").first())
    assert run.finished_at and run.worker_id == "@backend-1"
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()
    task = reload(task)  # the new holder's claim is untouched
    assert task.status == Status.IN_PROGRESS and task.worker_id == "@backend-2"
    assert "stopping its agent" in worker.output()


@pytest.mark.slow
@pytest.mark.skipif("connection.vendor != 'sqlite'")
def test_an_agent_whose_lease_could_not_be_renewed_is_stopped_before_it_runs_out(fleet):
    """The database stops taking writes (here: a write lock held past the lease), so the
    worker cannot renew the lease; its agent is stopped before the lease would run out, when
    another worker could take the task over."""
    task = submit("Outlived by its lease", pipeline="none")
    marker = f"62.{os.getpid()}"
    worker = fleet.start(
        "@backend-1",
        "backend",
        "sleep_agent.py",
        "--lease",
        "10",
        "--max-tasks",
        "1",
        env={"TEST_SLEEP": marker, "VIBE_SQLITE_BUSY_TIMEOUT_MS": "5000"},
    )
    wait_for(lambda: Run.objects.filter(task=task).exclude(argv=[]).exists(), what="the agent")
    wait_for(lambda: agents_of(worker, marker), what="its process")
    lock = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # no one writes until it ends: no renewal, no reaper
        lease = reload(task).lease_expires_at
        wait_for(lambda: not agents_of(worker, marker), timeout=15, what="the stop")
        stopped = timezone.now()
    finally:
        lock.rollback()
        lock.close()
    assert stopped < lease, (stopped, lease)
    assert worker.wait(30) == 0, worker.output()
    assert "could not renew the lease of task" in worker.output()
    run = Run.objects.get(task=task)
    assert run.outcome == "lease_lost" and run.finished_at
    assert reload(task).status == Status.PENDING  # given back, never run twice at once
