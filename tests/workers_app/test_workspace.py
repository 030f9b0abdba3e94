"""Workspaces: a git worktree per piece of work, shared with its reviews, cleaned when done."""

from __future__ import annotations

import subprocess

import pytest

from tasks_app import lifecycle
from tasks_app.models import Task
from workers_app import workspace
from workers_app.models import Worker

pytestmark = pytest.mark.django_db


def git(cwd, *args) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path, settings):
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "T")
    (path / "app.py").write_text("print('hi')\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "start")
    settings.VIBE_WORKSPACE = str(path)
    settings.VIBE_WORKTREES_DIR = str(tmp_path / "trees")
    return path


def test_builder_gets_its_own_worktree_and_review_reuses_it(repo):
    Worker.objects.create(worker_id="@b", lane="backend")
    task = lifecycle.submit("Edit app", lane="backend", actor="cli")
    ws = workspace.prepare(task)
    assert ws.is_git and ws.branch == f"vibe/task-{task.pk}"
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD") == f"vibe/task-{task.pk}"
    (ws.path / "app.py").write_text("print('hello')\n")
    (ws.path / "new.py").write_text("x = 1\n")
    snap = ws.snapshot()
    assert snap["branch"] == f"vibe/task-{task.pk}"
    assert "app.py" in snap["diff_stat"] and "1 untracked file(s)" in snap["diff_stat"]
    assert git(repo, "status", "--porcelain") == ""  # the main checkout is untouched

    claimed = lifecycle.claim_next("@b")
    lifecycle.complete(task.pk, worker_id="@b", token=claimed.claim_token, result=snap)
    review = Task.objects.get(parent=task)
    assert workspace.prepare(review).path == ws.path
    assert workspace.prepare(task).path == ws.path  # rework reuses it too


def test_clean_removes_finished_worktrees_and_keeps_open_ones(repo):
    Worker.objects.create(worker_id="@b", lane="backend", capacity_limit=5)
    done = lifecycle.submit("Finish me", lane="backend", actor="cli", pipeline="none")
    busy = lifecycle.submit("Still going", lane="backend", actor="cli", pipeline="none")
    done_path = workspace.prepare(done).path
    busy_path = workspace.prepare(busy).path
    first = lifecycle.claim_next("@b")
    lifecycle.claim_next("@b")
    lifecycle.complete(first.pk, worker_id="@b", token=first.claim_token, result={})
    planned = {c.path: c.reason for c in workspace.clean(dry_run=True)}
    assert planned[done_path].startswith("would remove")
    assert planned[busy_path] == f"task {busy.pk} is in_progress"
    assert done_path.exists()
    results = {c.path: c for c in workspace.clean()}
    assert results[done_path].removed and not done_path.exists()
    assert not results[busy_path].removed and busy_path.exists()
    assert f"vibe/task-{done.pk}" in git(repo, "branch", "--list")  # the work is kept


def test_plain_directory_workspace_is_used_as_is(tmp_path, settings):
    settings.VIBE_WORKSPACE = str(tmp_path)
    task = lifecycle.submit("x", lane="backend", actor="cli")
    ws = workspace.prepare(task)
    assert ws.path == tmp_path and not ws.is_git and ws.snapshot() == {}


def test_missing_workspace_is_a_workspace_error(tmp_path, settings):
    settings.VIBE_WORKSPACE = str(tmp_path / "missing")
    task = lifecycle.submit("x", lane="backend", actor="cli")
    with pytest.raises(workspace.WorkspaceError, match="is not a directory"):
        workspace.prepare(task)
