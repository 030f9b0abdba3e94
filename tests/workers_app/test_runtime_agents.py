"""The worker's outcome rules, budgets and session fallback, through the real worker loop.

Workers run in this process (`Worker.run()` with `once`), with real agent subprocesses (the
test agents in tests/agents/, the real Claude Code CLI against a stand-in API) in worktrees of a
real git repository made per test.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from chatops_app.models import Notification, Platform
from tasks_app import costs, lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, RunEvent, Task
from tests.conftest import AGENTS_DIR
from tests.standins.anthropic_api import HELLO_LINE, AnthropicStandIn
from workers_app import runtime
from workers_app.profiles import AgentProfile, command_profile, get_profile
from workers_app.workspace import instance_id

pytestmark = pytest.mark.django_db(transaction=True)

AUTHOR = "Vibe Bot <bot@example.com>"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path, settings) -> Path:
    """A clone of a bare repository with one commit, as the workers' VIBE_WORKSPACE."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    clone = tmp_path / "host"
    git(tmp_path, "clone", "-q", str(remote), str(clone))
    (clone / "README.md").write_text("# Demo\n")
    git(clone, "add", "README.md")
    git(clone, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    git(clone, "push", "-q", "origin", "main")
    settings.VIBE_WORKSPACE = str(clone)
    return clone


@pytest.fixture(autouse=True)
def worker_settings(tmp_path, settings) -> None:
    settings.VIBE_WORKSPACE = ""
    settings.VIBE_WORKTREES_DIR = str(tmp_path / "trees")
    settings.VIBE_AGENT_SANDBOX = "off"
    settings.VIBE_GIT_AUTHOR = AUTHOR
    settings.VIBE_TASK_BUDGET_USD = None
    settings.VIBE_DAILY_BUDGET_USD = None


def tree(task: Task) -> Path:
    from django.conf import settings

    return Path(settings.VIBE_WORKTREES_DIR) / f"{instance_id()}-task-{task.pk}"


def agent(*args: str) -> AgentProfile:
    return command_profile(
        shlex.join([sys.executable, str(AGENTS_DIR / "worktree_agent.py"), *args])
    )


def run_worker(worker_id: str, profile: AgentProfile, timeout: float = 60) -> runtime.WorkerLoop:
    """One in-process worker, until its lane has nothing claimable left."""
    worker = runtime.WorkerLoop(
        worker_id, profile=profile, once=True, interval=0.1, timeout=timeout
    )
    worker.run()
    return worker


def reload(task: Task) -> Task:
    return Task.objects.get(pk=task.pk)


# --- builders: no change, the worker's commit -----------------------------------------------


@pytest.mark.parametrize(("max_attempts", "status"), [(3, Status.PENDING), (1, Status.DEAD_LETTER)])
def test_a_builder_that_writes_nothing_fails_as_no_change(repo, max_attempts, status):
    task = lifecycle.submit(
        "Add a file", lane="backend", pipeline="none", actor="cli", max_attempts=max_attempts
    )
    before = timezone.now()
    run_worker("@backend-1", agent())
    task = reload(task)
    assert (task.status, task.last_error_type, task.attempt_count) == (status, "no_change", 1)
    if status == Status.PENDING:
        assert task.not_before is not None and task.not_before > before
    run = Run.objects.get(task=task)
    assert (run.outcome, run.exit_code, run.changed_files) == ("no_change", 0, [])
    assert "worktree agent: done" in task.last_error
    assert git(tree(task), "rev-parse", "HEAD") == git(repo, "rev-parse", "main")


def test_the_worker_commits_what_a_builder_left(repo):
    task = lifecycle.submit(
        "Write the notes\nwith a guide in a new folder",
        lane="backend",
        pipeline="none",
        actor="cli",
    )
    run_worker("@backend-1", agent("--write", "notes.txt", "--write", "docs/new/guide.md"))
    task = reload(task)
    assert task.status == Status.COMPLETED, task.last_error
    base = git(repo, "rev-parse", "main")
    worktree = tree(task)
    assert git(worktree, "rev-list", "--count", f"{base}..HEAD") == "1"
    assert (
        git(worktree, "log", "-1", "--format=%s") == f"task #{task.pk}: Write the notes (attempt 1)"
    )
    assert git(worktree, "log", "-1", "--format=%an <%ae>") == AUTHOR
    assert git(worktree, "status", "--porcelain") == ""
    files = [
        {"path": "docs/new/guide.md", "added": 2, "removed": 0},
        {"path": "notes.txt", "added": 2, "removed": 0},
    ]
    run = Run.objects.get(task=task)
    assert (run.outcome, run.changed_files) == ("completed", files)
    assert run.base_commit == base and run.head_commit == git(worktree, "rev-parse", "HEAD")
    assert task.result["base_commit"] == base
    assert task.result["changed_files"] == files
    assert task.head_commit == run.head_commit
    assert run.events.filter(kind="system", text="committed the changes the agent left").exists()


def test_a_builder_that_committed_everything_gets_no_extra_commit(repo):
    task = lifecycle.submit("Add a.txt", lane="backend", pipeline="none", actor="cli")
    run_worker("@backend-1", agent("--write", "a.txt", "--commit"))
    task = reload(task)
    assert task.status == Status.COMPLETED, task.last_error
    worktree = tree(task)
    base = git(repo, "rev-parse", "main")
    assert git(worktree, "log", "--format=%s", f"{base}..HEAD").splitlines() == [
        "the agent's own commit"
    ]
    # It committed as the factory: the worker gave it its author.
    assert git(worktree, "log", "-1", "--format=%an <%ae>") == AUTHOR
    assert task.result["changed_files"] == [{"path": "a.txt", "added": 2, "removed": 0}]
    run = Run.objects.get(task=task)
    assert not run.events.filter(text="committed the changes the agent left").exists()


# --- reviewers may not write --------------------------------------------------------------


def test_a_reviewer_that_writes_a_file_fails_and_its_change_is_set_aside(repo):
    task = lifecycle.submit("Add the feature", lane="backend", actor="cli")
    run_worker("@backend-1", agent("--write", "feature.txt"))
    task = reload(task)
    assert task.status == Status.REVIEW_NEEDED, task.last_error
    review = task.children.get()
    assert review.lane == "security"
    worktree = tree(task)
    head = task.head_commit
    assert git(worktree, "rev-parse", "HEAD") == head

    run_worker("@security-1", agent("--write", "review-notes.txt", "--verdict", "pass"))
    review = reload(review)
    assert (review.status, review.last_error_type) == (Status.PENDING, "reviewer_modified")
    assert review.verdict in ("", None)
    run = Run.objects.get(task=review)
    assert (run.role, run.outcome) == ("reviewer", "reviewer_modified")
    assert git(worktree, "rev-parse", "HEAD") == head
    assert git(repo, "rev-parse", task.branch) == head
    assert "review-notes.txt" not in git(worktree, "ls-tree", "-r", "--name-only", head)
    assert not (worktree / "review-notes.txt").exists()
    assert git(worktree, "status", "--porcelain") == ""
    ref = f"refs/vibe/set-aside/task-{review.pk}-run-{run.pk}"
    kept = git(repo, "show", f"{ref}:review-notes.txt")
    assert kept == "written by the worktree agent\nreview-notes.txt"
    assert run.events.filter(kind="system", data__ref=ref).exists()


# --- budgets ------------------------------------------------------------------------------


def spent_before(task: Task, builder: str, review: str) -> None:
    """Earlier runs of the work: one of the builder task, one of a review of it."""
    Run.objects.create(task=task, agent="x", role="builder", cost_usd=Decimal(builder))
    child = Task.objects.create(
        goal=f"Security audit of task #{task.pk}",
        lane="security",
        status=Status.COMPLETED,
        stage="review",
        parent=task,
    )
    Run.objects.create(task=child, agent="x", role="reviewer", cost_usd=Decimal(review))


def test_work_that_spent_its_budget_is_blocked_before_its_agent_starts(repo, settings):
    settings.VIBE_TASK_BUDGET_USD = Decimal("1.00")
    task = lifecycle.submit("Add a.txt", lane="backend", pipeline="none", actor="cli")
    spent_before(task, "0.60", "0.40")
    run_worker("@backend-1", agent("--write", "started.txt"))
    task = reload(task)
    assert (task.status, task.last_error_type) == (Status.BLOCKED, "budget_exceeded")
    assert "spent $1.00 of its $1.00 budget" in task.last_error
    run = Run.objects.filter(task=task).order_by("id").last()
    assert (run.outcome, run.argv, run.exit_code) == ("budget_exceeded", [], None)
    assert not (tree(task) / "started.txt").exists()


def test_work_with_budget_left_runs_normally(repo, settings):
    settings.VIBE_TASK_BUDGET_USD = Decimal("1.00")
    task = lifecycle.submit("Add a.txt", lane="backend", pipeline="none", actor="cli")
    spent_before(task, "0.50", "0.30")
    run_worker("@backend-1", agent("--write", "started.txt"))
    task = reload(task)
    assert task.status == Status.COMPLETED, task.last_error
    assert (tree(task) / "started.txt").exists()
    assert Run.objects.filter(task=task).order_by("id").last().outcome == "completed"


def test_an_agent_spending_past_the_budget_is_stopped_mid_run(repo, settings, tmp_path):
    settings.VIBE_TASK_BUDGET_USD = Decimal("1.00")
    # Aider prints its tokens and cost after every call; the worker prices the tokens as they
    # come (gpt-4.1: 100k in + 10k out = $0.28 a call) and stops it past what is left.
    program = tmp_path / "aider"
    program.write_text(f'#!/bin/sh\nexec {sys.executable} {AGENTS_DIR / "fake_aider.py"} "$@"\n')
    program.chmod(0o755)
    profile = replace(get_profile("aider"), name="aider", program=str(program))
    task = lifecycle.submit("Add a.txt", lane="backend", pipeline="none", actor="cli")
    run_worker("@backend-1", profile, timeout=60)
    task = reload(task)
    assert (task.status, task.last_error_type) == (Status.BLOCKED, "budget_exceeded")
    run = Run.objects.get(task=task)
    assert run.outcome == "budget_exceeded"
    assert run.duration_seconds < 10, "the agent was not stopped within a few seconds"
    assert run.cost_usd >= Decimal("1.00")
    assert run.events.filter(kind="system", text__startswith="stopped: the run spent").exists()


def ran_today(cost: str, *, at=None) -> Run:
    done = lifecycle.submit("Earlier work", lane="frontend", pipeline="none", actor="cli")
    run = Run.objects.create(task=done, agent="x", cost_usd=Decimal(cost))
    if at is not None:
        Run.objects.filter(pk=run.pk).update(started_at=at)
    return run


def test_a_spent_daily_budget_stops_claims_and_people_are_told_once(settings):
    settings.TIME_ZONE = "Europe/Paris"
    settings.VIBE_DAILY_BUDGET_USD = Decimal("0.50")
    ran_today("0.75")
    task = lifecycle.submit("Add a.txt", lane="backend", pipeline="none", actor="cli")
    worker = runtime.WorkerLoop("@backend-1", profile=agent(), interval=0.1)
    worker._claim_while_room()
    assert worker.slots == {} and worker.claimed == 0
    assert reload(task).status == Status.PENDING and reload(task).attempt_count == 0
    told = Notification.objects.filter(event="budget_reached")
    assert sorted(told.values_list("channel", flat=True)) == sorted(Platform.values)
    day = timezone.localtime().date().isoformat()
    assert set(told.values_list("key", flat=True)) == {f"budget_reached:{day}"}
    # Another worker noticing it tells nobody again.
    other = runtime.WorkerLoop("@backend-1", profile=agent(), interval=0.1)
    other._claim_while_room()
    assert other.slots == {} and told.count() == len(Platform.values)


def test_yesterdays_spend_does_not_count_against_today(settings):
    settings.TIME_ZONE = "Europe/Paris"
    settings.VIBE_DAILY_BUDGET_USD = Decimal("0.50")
    ran_today("0.75", at=costs.start_of_today() - timedelta(minutes=1))
    task = lifecycle.submit("Add a.txt", lane="backend", pipeline="none", actor="cli")
    run_worker("@backend-1", agent())
    assert reload(task).status == Status.COMPLETED  # no git here: nothing to have changed
    assert Run.objects.get(task=task).outcome == "completed"
    assert not Notification.objects.filter(event="budget_reached").exists()


# --- sessions -----------------------------------------------------------------------------


def kill_agents_working_in(path: Path) -> None:
    """Kill, by pid, what this test's worker started in `path` and no longer watches."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == path:
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


@pytest.mark.slow
def test_claude_that_cannot_resume_its_session_starts_a_fresh_one(
    repo, agent_cli_bin, monkeypatch, request
):
    monkeypatch.setenv("PATH", f"{agent_cli_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    task = lifecycle.submit("Add a greeting file", lane="backend", actor="cli")
    request.addfinalizer(lambda: kill_agents_working_in(tree(task)))
    unknown = str(uuid.uuid4())
    earlier = Run.objects.create(
        task=task, agent="claude", role="builder", session_id=unknown, outcome="agent_exit"
    )
    with AnthropicStandIn("builder") as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        run_worker("@backend-1", get_profile("claude"), timeout=180)
    task = reload(task)
    refused, fresh = Run.objects.filter(task=task).exclude(pk=earlier.pk).order_by("id")
    assert (refused.outcome, refused.resumed, refused.session_id) == (
        "resume_refused",
        True,
        unknown,
    )
    assert (fresh.outcome, fresh.resumed) == ("completed", False), fresh.stderr_tail
    assert fresh.session_id and fresh.session_id != unknown
    assert f"could not resume session {unknown}" in fresh.note
    assert fresh.note.endswith("started a fresh session")
    assert task.status == Status.REVIEW_NEEDED, task.last_error
    assert task.attempt_count == 0  # the refused resume cost no attempt
    assert (tree(task) / "hello.txt").read_text() == HELLO_LINE + "\n"


# --- transcripts --------------------------------------------------------------------------


def test_a_long_transcript_keeps_its_head_and_its_tail(settings):
    settings.VIBE_TRANSCRIPT_MAX_BYTES = 65536
    task = lifecycle.submit("Talk a lot", lane="backend", pipeline="none", actor="cli")
    run_worker("@backend-1", agent("--lines", "30000"))
    assert reload(task).status == Status.COMPLETED, reload(task).last_error
    run = Run.objects.get(task=task)
    assert 0 < run.transcript_bytes <= 65536 + 1024
    events = list(RunEvent.objects.filter(run=run).order_by("seq"))
    texts = [event.text for event in events]
    assert texts[0].startswith("line 00001 ")
    assert texts[1].startswith("line 00002 ")
    assert texts[-2].startswith("line 30000 ")
    assert texts[-1].startswith("worktree agent: done")
    markers = [e for e in events if e.kind == "system" and "not kept" in e.text]
    assert len(markers) == 1
    dropped = markers[0].data["dropped"]
    kept = sum(1 for e in events if e.kind == "output")
    assert kept + dropped == 30001
    assert f"{dropped} events not kept" in markers[0].text
    assert run.event_count == 30001 + 1  # every event's number, the marker's included
