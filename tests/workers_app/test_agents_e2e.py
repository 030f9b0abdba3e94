"""The real agent CLIs driven by real `runworker` processes, end to end.

Each test starts workers with a built-in profile (`--agent claude`, …) against a stand-in model
API on 127.0.0.1, in a clone of a bare repository, on the test database (SQLite or
PostgreSQL), and checks what a person would: the work is committed on the task's branch, the
run shows tokens, cost and a session, reviewers cannot write, rework resumes the session, and a
refused key pauses the worker instead of emptying its lane.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from chatops_app.models import Notification
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task
from tests.standins.anthropic_api import AUTH_ERROR, HELLO_LINE, AnthropicStandIn
from tests.standins.gemini_api import GeminiStandIn
from tests.standins.openai_chat import HELLO_FILE, OpenAIChatStandIn
from tests.standins.openai_responses import HELLO_TEXT, OpenAIResponsesStandIn
from workers_app.models import Worker, WorkerStatus
from workers_app.workspace import instance_id

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A clone of a bare repository with one commit: a host's checkout of the team's remote."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    clone = tmp_path / "host-a"
    git(tmp_path, "clone", "-q", str(remote), str(clone))
    (clone / "README.md").write_text("# Demo\n")
    git(clone, "add", "README.md")
    git(clone, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    git(clone, "push", "-q", "origin", "main")
    return clone


@pytest.fixture
def agents_env(agent_cli_bin, repo, tmp_path) -> dict[str, str]:
    return {
        "PATH": f"{agent_cli_bin}{os.pathsep}{os.environ['PATH']}",
        "VIBE_WORKSPACE": str(repo),
        "VIBE_WORKTREES_DIR": str(tmp_path / "trees"),
    }


def run_worker(fleet, worker_id: str, lane: str, agent: str, env: dict[str, str], *extra: str):
    worker = fleet.start_plain(
        [worker_id, "--lane", lane, "--agent", agent, "--once", *extra], env=env
    )
    code = worker.wait(180)
    return code, worker.output()


def reload(task: Task) -> Task:
    return Task.objects.get(pk=task.pk)


@pytest.mark.parametrize("sandbox", ["off", "bwrap"])
def test_claude_builds_commits_is_reviewed_read_only_and_resumes_for_rework(
    fleet, agents_env, repo, sandbox
):
    task = lifecycle.submit("Add a greeting file", lane="backend", actor="cli")
    env = {**agents_env, "VIBE_AGENT_SANDBOX": sandbox, "ANTHROPIC_API_KEY": "sk-test"}
    with AnthropicStandIn("builder") as builder_api:
        code, out = run_worker(
            fleet, "@backend-1", "backend", "claude", {**env, "ANTHROPIC_BASE_URL": builder_api.url}
        )
        assert code == 0, out
        task = reload(task)
        assert task.status == Status.REVIEW_NEEDED, (task.last_error, out)
        run = Run.objects.get(task=task)
        assert (run.kind, run.role, run.sandbox, run.outcome) == (
            "claude",
            "builder",
            sandbox,
            "completed",
        )
        assert run.session_id and run.input_tokens and run.output_tokens
        assert run.cost_usd is not None and run.cost_usd > 0
        assert run.event_count > 0
        assert run.events.filter(kind="tool_call", data__name="Write").exists()
        # The agent committed the file itself; the branch carries it, the base does not.
        tree = Path(agents_env["VIBE_WORKTREES_DIR"]) / f"{instance_id()}-task-{task.pk}"
        assert (tree / "hello.txt").read_text() == HELLO_LINE + "\n"
        assert task.result["changed_files"] == [{"path": "hello.txt", "added": 1, "removed": 0}]
        assert git(tree, "status", "--porcelain") == ""
        assert git(tree, "rev-parse", "HEAD") == task.head_commit
        assert task.result["base_commit"] == git(repo, "rev-parse", "main")

        # The security review: the stand-in asks the reviewer to write a file; it cannot.
        review = task.children.get()
        with AnthropicStandIn("reviewer") as reviewer_api:
            reviewer_api.verdict = {
                "verdict": "FAIL",
                "score": 40,
                "findings": [
                    {"severity": "HIGH", "title": "Greeting is too loud", "file": "hello.txt"}
                ],
                "summary": "Make it quieter.",
            }
            review_env = {**env, "ANTHROPIC_BASE_URL": reviewer_api.url}
            code, out = run_worker(fleet, "@security-1", "security", "claude", review_env)
            assert code == 0, out
            prompt = reviewer_api.conversations[0]["messages"][0]
            assert f"git diff {task.result['base_commit']}..{task.head_commit}" in str(prompt)
        review = reload(review)
        assert review.status == Status.COMPLETED and review.verdict == "FAIL"
        assert not (tree / "review-notes.txt").exists()
        assert git(tree, "rev-parse", "HEAD") == task.head_commit
        assert Run.objects.get(task=review).role == "reviewer"

        # Rework: the builder's session resumes with only the findings.
        task = reload(task)
        assert task.status == Status.PENDING and task.review_round == 1
        first_session = run.session_id
        code, out = run_worker(
            fleet, "@backend-1", "backend", "claude", {**env, "ANTHROPIC_BASE_URL": builder_api.url}
        )
        assert code == 0, out
        rework = Run.objects.filter(task=task).order_by("id").last()
        assert rework.resumed and rework.session_id == first_session, rework.note
        resumed_call = builder_api.conversations[-1]
        sent = str(resumed_call["messages"])
        assert "Greeting is too loud" in sent  # the findings, as the new message
        assert "Add a greeting file" in sent  # and the first round, from the session
        assert (tree / "hello-2.txt").exists()
        assert reload(task).status == Status.REVIEW_NEEDED


def test_a_refused_key_is_agent_auth_and_the_worker_pauses_itself(fleet, agents_env):
    tasks = [
        lifecycle.submit(f"Task {n}", lane="backend", pipeline="none", actor="cli")
        for n in range(3)
    ]
    with AnthropicStandIn("builder") as api:
        api.fail_always(401, AUTH_ERROR)
        env = {
            **agents_env,
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "sk-wrong",
            "VIBE_WORKER_FAILURE_LIMIT": "2",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        code, out = run_worker(fleet, "@backend-1", "backend", "claude", env, "--capacity", "1")
    assert code == 0, out
    runs = list(Run.objects.order_by("id"))
    assert [r.outcome for r in runs] == ["agent_auth", "agent_auth"], out
    worker = Worker.objects.get(pk="@backend-1")
    assert worker.status == WorkerStatus.PAUSED
    assert "agent_auth" in worker.status_reason
    # Not one task was used up: the two that failed got their attempt back.
    for task in tasks:
        task = reload(task)
        assert task.status == Status.PENDING and task.attempt_count == 0, task.last_error
    assert {reload(t).last_error_type for t in tasks[:2]} == {"agent_auth"}
    assert Notification.objects.filter(event="worker_paused", worker="@backend-1").exists()
    assert reload(tasks[2]).last_error_type == ""


def test_aider_builds_and_its_commit_is_the_change(fleet, agents_env, repo):
    task = lifecycle.submit("Add a greeting file", lane="backend", pipeline="none", actor="cli")
    with OpenAIChatStandIn() as api:
        env = {
            **agents_env,
            "OPENAI_API_BASE": f"{api.url}/v1",
            "OPENAI_API_KEY": "sk-test",
            "VIBE_AGENT_SANDBOX": "bwrap",
        }
        code, out = run_worker(fleet, "@backend-1", "backend", "aider", env)
    assert code == 0, out
    task = reload(task)
    assert task.status == Status.COMPLETED, (task.last_error, out)
    run = Run.objects.get(task=task)
    assert run.kind == "aider" and run.outcome == "completed"
    assert run.input_tokens and run.cost_usd is not None
    assert [f["path"] for f in task.result["changed_files"]] == [HELLO_FILE]
    tree = Path(agents_env["VIBE_WORKTREES_DIR"]) / f"{instance_id()}-task-{task.pk}"
    assert git(tree, "status", "--porcelain") == ""  # no .aider* files in the change


@pytest.mark.parametrize("sandbox", ["off", "bwrap"])
def test_codex_edits_and_the_worker_commits_for_it(fleet, agents_env, tmp_path, sandbox):
    task = lifecycle.submit("Add a greeting file", lane="backend", pipeline="none", actor="cli")
    with OpenAIResponsesStandIn("builder") as api:
        profiles = tmp_path / "agents.toml"
        args = ", ".join(json.dumps(a) for a in api.codex_args())  # TOML strings
        profiles.write_text(f'[profiles.codex-local]\nkind = "codex"\nextra_args = [{args}]\n')
        env = {
            **agents_env,
            "OPENAI_API_KEY": "sk-test",
            "VIBE_AGENT_PROFILES_FILE": str(profiles),
            "VIBE_AGENT_SANDBOX": sandbox,
        }
        code, out = run_worker(fleet, "@backend-1", "backend", "codex-local", env)
    assert code == 0, out
    task = reload(task)
    assert task.status == Status.COMPLETED, (task.last_error, out)
    tree = Path(agents_env["VIBE_WORKTREES_DIR"]) / f"{instance_id()}-task-{task.pk}"
    assert HELLO_TEXT in (tree / "hello.txt").read_text()
    subject = git(tree, "log", "-1", "--format=%s")
    assert subject == f"task #{task.pk}: Add a greeting file (attempt 1)"
    run = Run.objects.get(task=task)
    assert run.session_id and run.input_tokens


def test_gemini_builds_in_a_fresh_worktree_it_was_never_asked_to_trust(fleet, agents_env):
    task = lifecycle.submit("Add a greeting file", lane="backend", pipeline="none", actor="cli")
    with GeminiStandIn("builder") as api:
        env = {**agents_env, "GOOGLE_GEMINI_BASE_URL": api.url, "GEMINI_API_KEY": "test-key"}
        code, out = run_worker(fleet, "@backend-1", "backend", "gemini", env)
    assert code == 0, out
    task = reload(task)
    assert task.status == Status.COMPLETED, (task.last_error, out)
    run = Run.objects.get(task=task)
    assert run.kind == "gemini" and run.session_id and run.input_tokens
    assert [f["path"] for f in task.result["changed_files"]] == ["hello.txt"]
