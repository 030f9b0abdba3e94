"""`runworker` on both databases: pipelines, failures and workspaces through the command in this
process; crashes, signals, races and a worker left running as real processes (marked `slow`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task, TaskHistory
from tests.waiting import wait_for
from tests.workers_app.conftest import worker_args
from workers_app.models import Worker
from workers_app.workspace import instance_id


def submit(goal: str, lane: str = "backend", **kw) -> Task:
    return lifecycle.submit(goal, lane=lane, actor="cli", **kw)


def reload(task: Task) -> Task:
    return Task.objects.get(pk=task.pk)


# --- the command's front door -----------------------------------------------------------------


@pytest.mark.django_db
def test_unknown_worker_without_lane_is_refused_clearly():
    with pytest.raises(CommandError, match="does not exist; pass --lane"):
        call_command("runworker", "@ghost-1", "--once")
    assert not Worker.objects.filter(pk="@ghost-1").exists()


@pytest.mark.django_db
def test_lane_mismatch_is_refused():
    Worker.objects.create(worker_id="@x-1", lane="backend")
    with pytest.raises(CommandError, match="works the backend lane, not qa"):
        call_command("runworker", "@x-1", "--lane", "qa", "--once")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--capacity", "0"], "must be at least 1"),
        (["--interval", "soon"], "not a number of seconds"),
        (["--lease", "0"], "must be a number of seconds"),
        (["--agent", "gpt-9"], "unknown agent profile 'gpt-9'"),
        (["--agent", "command"], "has no command"),
        (["--agent-command", "python 'oops"], "cannot split"),
        # Beyond what the database and the clock can hold: a usage error, not a crash.
        (["--capacity", "99999999999999999999"], "must be at most"),
        (["--capacity", "3000000000"], "must be at most"),
        (["--lease", "99999999999999999999"], "must be a number of seconds ≤"),
    ],
)
def test_bad_flags_get_a_clear_message(flags, message):
    with pytest.raises(CommandError, match=message):
        call_command("runworker", "@x-1", "--lane", "backend", "--once", *flags)
    assert not Worker.objects.filter(pk="@x-1").exists()  # nothing was changed


# --- pipelines ----------------------------------------------------------------------------------


def test_backend_work_goes_through_security_then_qa_to_completed(fleet):
    task = submit("Add a /health endpoint")
    fleet.run("@backend-1", "backend", "ok_agent.py")
    assert reload(task).status == Status.REVIEW_NEEDED
    fleet.run("@security-1", "security", "verdict_agent.py", env={"TEST_VERDICT": "pass"})
    fleet.run("@qa-1", "qa", "verdict_agent.py", env={"TEST_VERDICT": "pass"})
    task = reload(task)
    assert task.status == Status.COMPLETED
    assert "ok agent received: Vibe Factory task" in task.result["summary"]
    reviews = list(task.children.order_by("id"))
    assert [(r.lane, r.status, r.verdict) for r in reviews] == [
        ("security", "completed", "PASS"),
        ("qa", "completed", "PASS"),
    ]
    run = Run.objects.get(task=task)
    assert run.outcome == "completed" and run.exit_code == 0 and run.finished_at


def test_critical_security_fail_blocks_and_never_reaches_qa(fleet):
    task = submit("Store the API token")
    fleet.run("@backend-1", "backend")
    fleet.run("@security-1", "security", "verdict_agent.py", env={"TEST_VERDICT": "critical"})
    task = reload(task)
    assert task.status == Status.BLOCKED
    assert task.last_error_type == "review_blocked"
    assert not Task.objects.filter(lane="qa").exists()


def test_ux_fail_sends_rework_with_findings_in_the_next_prompt(fleet, tmp_path):
    captures = tmp_path / "prompts"
    # The capture agent writes outside its workspace, which the sandbox would refuse.
    env = {"TEST_CAPTURE_DIR": str(captures), "VIBE_AGENT_SANDBOX": "off"}
    task = submit("Add a logo to the header", lane="frontend")
    fleet.run("@frontend-1", "frontend", "capture_agent.py", env=env)
    fleet.run("@ux-designer", "ux", "verdict_agent.py", env={"TEST_VERDICT": "fail"})
    assert reload(task).status == Status.PENDING
    fleet.run("@frontend-1", "frontend", "capture_agent.py", env=env)
    prompts = sorted(captures.glob(f"task-{task.pk}-*.txt"), key=lambda p: p.stat().st_mtime)
    assert len(prompts) == 2
    first, second = (p.read_text() for p in prompts)
    assert "Missing alt text" not in first
    assert "### Rework (round 1)" in second
    assert "[HIGH] Missing alt text (templates/base.html) [from ux review]" in second
    assert reload(task).status == Status.REVIEW_NEEDED


def test_malformed_verdict_is_a_bad_verdict_failure_with_the_parse_error(fleet):
    task = submit("Audit it", lane="security", max_attempts=1)
    fleet.run("@security-1", "security", "verdict_agent.py", env={"TEST_VERDICT": "malformed"})
    task = reload(task)
    assert task.status == Status.DEAD_LETTER
    assert task.last_error_type == "bad_verdict"
    assert "not valid JSON" in task.last_error


# --- failures -----------------------------------------------------------------------------------


def test_always_failing_agent_runs_max_attempts_then_dead_letter(fleet):
    task = submit("Doomed", max_attempts=3)
    fleet.run("@backend-1", "backend", "fail_agent.py")
    task = reload(task)
    assert task.status == Status.DEAD_LETTER
    assert task.last_error_type == "agent_exit"
    assert task.attempt_count == 3
    assert "status 3" in task.last_error and "deliberate test failure" in task.last_error
    runs = list(Run.objects.filter(task=task).order_by("id"))
    assert [r.attempt for r in runs] == [1, 2, 3]
    assert {r.outcome for r in runs} == {"agent_exit"}


def test_missing_agent_goes_straight_to_dead_letter(fleet, subprocess_env):
    task = submit("Needs a real agent", max_attempts=3)
    fleet.run("@backend-1", "backend", "ok_agent.py", "--agent-command", "no-such-agent-xyz")
    task = reload(task)
    assert task.status == Status.DEAD_LETTER
    assert task.last_error_type == "agent_missing"
    assert task.attempt_count == 1
    assert "no-such-agent-xyz" in task.last_error
    assert Run.objects.filter(task=task).count() == 1


def test_time_limit_is_a_timeout_failure(fleet):
    task = submit("Slow", max_attempts=1)
    fleet.run("@backend-1", "backend", "sleep_agent.py", "--timeout", "1", env={"TEST_SLEEP": "30"})
    task = reload(task)
    assert task.status == Status.DEAD_LETTER and task.last_error_type == "timeout"


# --- crashes and signals ------------------------------------------------------------------------


def agents_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds `entry`."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                state = (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _claimed_by(task: Task, worker_id: str):
    def check():
        current = reload(task)
        return current.status == Status.IN_PROGRESS and current.worker_id == worker_id

    return check


@pytest.mark.slow
def test_kill_9_mid_task_requeues_after_lease_and_another_worker_finishes(fleet):
    task = submit("Survive a crash", pipeline="none")
    marker = f"60.{os.getpid()}"  # a TEST_SLEEP value no other test uses: finds our agent
    doomed = fleet.start(
        "@backend-1", "backend", "sleep_agent.py", "--lease", "2", env={"TEST_SLEEP": marker}
    )
    wait_for(_claimed_by(task, "@backend-1"), what="first claim")
    wait_for(lambda: Run.objects.filter(task=task).exclude(argv=[]).exists(), what="agent start")
    assert agents_with_env(f"TEST_SLEEP={marker}")
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.wait(10)
    # The orphaned agent dies with its worker, so it cannot edit the task's files any more.
    wait_for(lambda: not agents_with_env(f"TEST_SLEEP={marker}"), timeout=5, what="agent death")
    survivor = fleet.start("@backend-2", "backend", "ok_agent.py", "--lease", "2")
    wait_for(lambda: reload(task).status == Status.COMPLETED, timeout=30, what="completion")
    survivor.proc.send_signal(signal.SIGTERM)
    assert survivor.wait(30) == 0
    task = reload(task)
    assert task.attempt_count == 1
    assert task.last_error_type == "lease_expired"
    assert task.worker_id == "@backend-2"
    notes = list(TaskHistory.objects.filter(task=task).values_list("note", flat=True))
    assert sum("lease_expired" in n for n in notes) == 1
    assert Worker.objects.get(pk="@backend-1").active_tasks == 0


@pytest.mark.slow
def test_sigterm_mid_task_releases_it_and_exits_zero(fleet):
    task = submit("Interrupted", pipeline="none")
    worker = fleet.start(
        "@backend-1", "backend", "sleep_agent.py", "--grace", "0.5", env={"TEST_SLEEP": "60"}
    )
    wait_for(_claimed_by(task, "@backend-1"), what="claim")
    wait_for(lambda: Run.objects.filter(task=task).exclude(argv=[]).exists(), what="agent start")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    task = reload(task)
    assert task.status == Status.PENDING
    assert task.attempt_count == 0
    assert not Task.objects.filter(status=Status.IN_PROGRESS).exists()
    run = Run.objects.get(task=task)
    assert run.outcome == "released" and run.finished_at
    row = Worker.objects.get(pk="@backend-1")
    assert row.active_tasks == 0 and row.status == "offline"


@pytest.mark.slow
def test_idle_worker_exits_at_once_on_sigterm(fleet):
    worker = fleet.start("@backend-1", "backend")
    wait_for(lambda: "working" in worker.output(), what="start")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0


@pytest.mark.slow
def test_live_tail_is_written_while_the_agent_runs(fleet):
    task = submit("Chatty", pipeline="none")
    worker = fleet.start("@backend-1", "backend", "sleep_agent.py", env={"TEST_SLEEP": "60"})
    wait_for(
        lambda: "sleep agent: tick" in (Run.objects.filter(task=task).first() or Run()).stdout_tail,
        timeout=20,
        what="live tail",
    )
    worker.proc.send_signal(signal.SIGTERM)  # drain: the agent gets a 20 s grace period
    wait_for(lambda: "stopping; waiting" in worker.output(), what="drain")
    worker.proc.send_signal(signal.SIGTERM)  # second signal: stop it now
    assert worker.wait(10) == 0
    assert reload(task).status == Status.PENDING


@pytest.mark.slow
def test_cancelled_task_stops_its_agent(fleet):
    task = submit("Cancel me", pipeline="none")
    worker = fleet.start(
        "@backend-1", "backend", "sleep_agent.py", "--lease", "2", env={"TEST_SLEEP": "60"}
    )
    wait_for(_claimed_by(task, "@backend-1"), what="claim")
    lifecycle.cancel(task.pk, actor="user:alice")
    wait_for(
        lambda: Run.objects.filter(task=task, outcome="cancelled").exists(),
        timeout=15,
        what="agent stopped",
    )
    assert reload(task).status == Status.CANCELLED
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0


# --- many workers -------------------------------------------------------------------------------


@pytest.mark.slow
def test_many_workers_drain_many_tasks_without_double_claims(fleet):
    lanes = ["backend", "frontend", "security"]  # builders and an auditor lane
    per_lane = 25
    tasks = [
        submit(f"{lane} job {i}", lane=lane, pipeline="none")
        for lane in lanes
        for i in range(per_lane)
    ]
    workers = []
    for lane in lanes:
        for n in (1, 2):
            workers.append(
                fleet.start(f"@{lane}-{n}", lane, "verdict_agent.py", "--once", capacity=2)
            )
    peak = 0
    while any(w.proc.poll() is None for w in workers):
        active = list(Worker.objects.values_list("active_tasks", "capacity_limit"))
        for used, limit in active:
            assert used <= limit
        peak = max([peak, *(used for used, _ in active)])
        time.sleep(0.02)
    for worker in workers:
        assert worker.wait(10) == 0, worker.output()
        assert "database is locked" not in worker.output()
    ids = [t.pk for t in tasks]
    assert Task.objects.filter(pk__in=ids, status=Status.COMPLETED).count() == len(ids)
    claims = TaskHistory.objects.filter(task_id__in=ids, to_status=Status.IN_PROGRESS)
    assert claims.count() == len(ids)  # exactly one claim per task: no double claims
    assert Run.objects.filter(task_id__in=ids).count() == len(ids)
    assert peak >= 1
    assert set(Worker.objects.values_list("active_tasks", flat=True)) == {0}


def test_output_files_are_not_left_behind(fleet, settings):
    submit("With prompt file", pipeline="none")
    fleet.run("@backend-1", "backend")
    prompts = Path(settings.VAR_DIR) / "prompts"
    assert not prompts.exists() or not list(prompts.iterdir())


# --- profiles, workspaces and leases end to end ---------------------------------------------------


def test_user_profile_from_toml_passes_the_prompt_in_a_file(fleet, tmp_path):
    profiles = tmp_path / "agents.toml"
    profiles.write_text(
        '[profiles.file-reader]\nargv = ["{python}", "-c", "import sys; '
        'print(\'read:\', open(sys.argv[1]).readline())", "{prompt_file}"]\n'
        'prompt = "file"\n'
    )
    task = submit("Read me from a file", pipeline="none")
    fleet.run_plain(
        ["@backend-1", "--lane", "backend", "--once", "--agent", "file-reader"],
        env={"VIBE_AGENT_PROFILES_FILE": str(profiles)},
    )
    task = reload(task)
    assert task.status == Status.COMPLETED
    assert (
        f"read: Vibe Factory task #{task.pk} (backend lane): Read me from a file"
        in (task.result["summary"])
    )
    assert Worker.objects.get(pk="@backend-1").agent_profile == "file-reader"


def test_git_workspace_commits_what_the_agent_left_and_records_the_change(fleet, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        [
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=T",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "start",
        ],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    task = submit("Write hello.txt", pipeline="none")
    fleet.run_plain(
        [
            "@backend-1",
            "--lane",
            "backend",
            "--once",
            "--agent-command",
            f"{sys.executable} -c \"open('hello.txt', 'w').write('hi')\"",
        ],
        env={"VIBE_WORKSPACE": str(repo), "VIBE_WORKTREES_DIR": str(tmp_path / "trees")},
    )
    task = reload(task)
    assert task.status == Status.COMPLETED
    assert task.branch == f"vibe/{instance_id()}/task-{task.pk}-write-hello-txt"
    assert len(task.head_commit) == 40
    # The agent wrote a file and committed nothing: the worker committed it on the branch.
    assert "hello.txt | 1 +" in task.diff_stat
    tree = tmp_path / "trees" / f"{instance_id()}-task-{task.pk}"
    assert (tree / "hello.txt").read_text() == "hi"
    log = subprocess.run(
        ["git", "log", "-1", "--format=%H%n%an <%ae>%n%s"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert log[0] == task.head_commit
    assert log[1].startswith("@backend-1 <backend-1@")
    assert log[2] == f"task #{task.pk}: Write hello.txt (attempt 1)"
    assert task.result["changed_files"] == [{"path": "hello.txt", "added": 1, "removed": 0}]
    assert task.result["base_commit"] != task.head_commit
    run = Run.objects.get(task=task)
    assert (run.base_commit, run.head_commit) == (task.result["base_commit"], task.head_commit)
    assert "+++ b/hello.txt" in run.patch and "\n+hi" in run.patch  # the diff, stored
    assert not (repo / "hello.txt").exists()


def test_workspace_error_dead_letters_and_the_worker_goes_on(fleet, tmp_path):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    first, second = submit("One", pipeline="none"), submit("Two", pipeline="none")
    fleet.run("@backend-1", "backend", env={"VIBE_WORKSPACE": str(not_a_dir)})
    for task in (reload(first), reload(second)):
        assert task.status == Status.DEAD_LETTER
        assert task.last_error_type == "workspace_error"
        assert "is not a directory" in task.last_error


@pytest.mark.slow
def test_heartbeats_keep_a_short_lease_alive_past_its_length(fleet):
    task = submit("Longer than the lease", pipeline="none")
    fleet.start("@backend-1", "backend", "sleep_agent.py", "--lease", "2", env={"TEST_SLEEP": "5"})
    wait_for(_claimed_by(task, "@backend-1"), what="claim")
    fleet.start("@backend-2", "backend", "ok_agent.py", "--lease", "2")  # an idle reaper
    wait_for(lambda: reload(task).status == Status.COMPLETED, timeout=30, what="completion")
    task = reload(task)
    assert task.attempt_count == 0 and task.worker_id == "@backend-1"
    assert Worker.objects.get(pk="@backend-1").last_heartbeat is not None


def test_simulated_agent_moves_work_through_the_whole_pipeline(fleet):
    env = {"VIBE_SIM_SLEEP": "0", "VIBE_SIM_OUTCOME": "pass"}
    backend = submit("Add rate limiting")
    frontend = submit("Add a dark mode toggle", lane="frontend")
    data_review = submit("Check the nightly import", lane="data")
    for worker_id, lane in [
        ("@backend-1", "backend"),
        ("@frontend-1", "frontend"),
        ("@data-analyst", "data"),
        ("@security-1", "security"),
        ("@ux-designer", "ux"),
        ("@qa-1", "qa"),
    ]:
        args = [worker_id, "--lane", lane, "--capacity", "2", "--once", "--agent", "simulated"]
        fleet.run_plain(args, env=env)
    for task in (backend, frontend, data_review):
        assert reload(task).status == Status.COMPLETED, reload(task).last_error
    assert "[simulated agent]" in Run.objects.filter(task=backend).get().stdout_tail
    assert reload(data_review).verdict == "PASS"
    ux = Task.objects.get(parent=frontend, lane="ux")
    assert ux.verdict == "PASS" and ux.score is not None


def test_paused_worker_stays_paused_and_claims_nothing(fleet):
    Worker.objects.filter(pk="@backend-1").delete()  # the default pool's row, if present
    Worker.objects.create(worker_id="@backend-1", lane="backend", status="paused")
    task = submit("Wait for a person", pipeline="none")
    output = fleet.run("@backend-1", "backend")
    assert "is paused: it claims nothing until resumed" in output
    assert reload(task).status == Status.PENDING
    assert Worker.objects.get(pk="@backend-1").status == "paused"


def test_noisy_binary_output_is_stored_bounded_and_clean(fleet):
    task = submit("Print a lot", pipeline="none")
    fleet.run("@backend-1", "backend", "noisy_agent.py")
    assert reload(task).status == Status.COMPLETED
    run = Run.objects.get(task=task)
    assert "\x00" not in run.stdout_tail
    assert run.stdout_tail.rstrip().endswith("noisy agent: done")
    assert len(run.stdout_tail) < 70_000  # 200 KB of output, a 64 KB tail kept


def test_max_tasks_stops_after_that_many_claims(fleet):
    tasks = [submit(f"job {n}", pipeline="none") for n in range(3)]
    fleet.run_plain(worker_args("@backend-1", "backend", "ok_agent.py", 1, "--max-tasks", "2"))
    statuses = sorted(reload(t).status for t in tasks)
    assert statuses == [Status.COMPLETED, Status.COMPLETED, Status.PENDING]


@pytest.mark.slow
def test_idle_worker_notices_new_work_at_once(fleet):
    # On PostgreSQL the fallback poll is set to 30 s, so only LISTEN/NOTIFY can be this quick.
    flags = ["--interval", "30"] if connection.vendor == "postgresql" else []
    worker = fleet.start("@backend-1", "backend", "ok_agent.py", *flags)
    wait_for(lambda: "polling every" in worker.output() or "LISTEN" in worker.output())
    time.sleep(1.0)  # idle for a while
    task = submit("Quick!", pipeline="none")
    wait_for(lambda: reload(task).status == Status.COMPLETED, timeout=10, what="completion")
    times = dict(TaskHistory.objects.filter(task=task).values_list("to_status", "created_at"))
    assert (times[Status.IN_PROGRESS] - times[Status.PENDING]).total_seconds() < 1.0
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0


@pytest.mark.slow
def test_a_slow_worktree_never_stalls_the_other_tasks_leases(fleet, tmp_path):
    """`git worktree add` (here slowed by a post-checkout hook past the lease) runs off the
    loop: the running task's lease keeps being renewed, and both finish without a lapse."""
    repo = tmp_path / "repo"
    repo.mkdir()
    slow = tmp_path / "slow-now"
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=T"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], cwd=repo, check=True)
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f'#!/bin/sh\n[ -f "{slow}" ] && sleep 8\nexit 0\n')
    hook.chmod(0o755)
    agent = f"{sys.executable} -c \"import time; time.sleep(9); open('out.txt', 'w').write('x')\""
    first = submit("Runs while the other prepares", pipeline="none")
    worker = fleet.start_plain(
        ["@backend-1", "--lane", "backend", "--capacity", "2", "--lease", "6", "--once"]
        + ["--agent-command", agent],
        env={"VIBE_WORKSPACE": str(repo), "VIBE_WORKTREES_DIR": str(tmp_path / "trees")},
    )
    deadline = time.monotonic() + 30
    while not Run.objects.filter(task=first).exclude(argv=[]).exists():
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.1)
    slow.touch()
    second = submit("Its worktree is slow", pipeline="none")
    leases = []
    while reload(first).status == Status.IN_PROGRESS:
        lease = reload(first).lease_expires_at
        if lease is not None:
            leases.append((timezone.now(), lease))
        assert time.monotonic() < deadline + 30, worker.output()
        time.sleep(0.3)
    assert worker.wait(60) == 0, worker.output()
    assert all(lease > now for now, lease in leases), "the first task's lease lapsed"
    assert len({lease for _, lease in leases}) >= 3, "its lease was not renewed"
    for task in (first, second):
        task = reload(task)
        assert task.status == Status.COMPLETED, (task.last_error, worker.output())
    assert (
        not TaskHistory.objects.filter(note__contains="lease")
        .exclude(note__startswith="claimed")
        .exists()
    )
