"""Workspaces: a git worktree per piece of work, shared with its reviews, cleaned when done."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from django.core.management import call_command

from tasks_app import lifecycle
from tasks_app.models import Task
from workers_app import cleanup, workspace
from workers_app.models import Instance, Worker

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_instance_id():
    """Each test's database makes its own instance id; the per-process cache must not leak."""
    workspace.instance_id.cache_clear()
    yield
    workspace.instance_id.cache_clear()


def new_factory_database() -> str:
    """What a fresh factory database on the same repository amounts to: another instance id."""
    Instance.objects.all().delete()
    workspace.instance_id.cache_clear()
    return workspace.instance_id()


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
    branch = f"vibe/{workspace.instance_id()}/task-{task.pk}-edit-app"
    assert ws.is_git and ws.branch == branch
    assert ws.path.name == f"{workspace.instance_id()}-task-{task.pk}"
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD") == branch
    assert ws.remote == "" and ws.base_commit == git(repo, "rev-parse", "HEAD")
    (ws.path / "app.py").write_text("print('hello')\n")
    (ws.path / "new.py").write_text("x = 1\n")
    snap = ws.snapshot()
    assert snap["branch"] == branch
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
    planned = {c.path: c.reason for c in cleanup.clean(dry_run=True)}
    assert planned[done_path].startswith("would remove")
    assert planned[busy_path] == f"task {busy.pk} is in_progress"
    assert done_path.exists()
    results = {c.path: c for c in cleanup.clean()}
    assert results[done_path].removed and not done_path.exists()
    assert not results[busy_path].removed and busy_path.exists()
    assert workspace.branch_name(done) in git(repo, "branch", "--list")  # the work is kept


def test_instance_id_is_made_once_and_kept_in_the_database():
    first = workspace.instance_id()
    assert re.fullmatch(r"[a-z0-9]{6}", first)
    workspace.instance_id.cache_clear()
    assert workspace.instance_id() == first == Instance.objects.get().instance_id
    assert Instance.current() == first and Instance.objects.count() == 1


def test_vibe_status_shows_the_instance_id(capsys):
    call_command("vibe", "status")
    assert f"Factory instance: {workspace.instance_id()}" in capsys.readouterr().out
    call_command("vibe", "status", "--json")
    assert json.loads(capsys.readouterr().out)["instance_id"] == workspace.instance_id()


def test_branch_names_carry_the_instance_and_a_short_slug_of_the_goal():
    task = lifecycle.submit(
        "Fix: the Login page — it crashes on Ünïcode names and much, much more\nDetails",
        lane="backend",
        actor="cli",
    )
    name = workspace.branch_name(task, "abc123")
    slug = name.removeprefix(f"vibe/abc123/task-{task.pk}-")
    assert slug == "fix-the-login-page-it-crashes-on-unicode"
    assert len(slug) <= 40 and re.fullmatch(r"[a-z0-9-]+", slug)
    task.goal = "???"
    assert workspace.branch_name(task, "abc123") == f"vibe/abc123/task-{task.pk}-work"


def test_two_factory_databases_never_share_a_branch_or_clean_each_others_worktrees(repo):
    Worker.objects.create(worker_id="@b", lane="backend")
    task = lifecycle.submit("Edit app", lane="backend", actor="cli", pipeline="none")
    mine = workspace.prepare(task)
    (mine.path / "app.py").write_text("print('mine')\n")
    mine.commit_all(author="A <a@example.com>", message="mine")

    other_id = new_factory_database()  # the same task id 1, 2, … in another database
    theirs = workspace.prepare(task)
    assert theirs.branch != mine.branch and theirs.path != mine.path
    assert (theirs.path / "app.py").read_text() == "print('hi')\n"  # none of the first's commits
    claimed = lifecycle.claim_next("@b")
    lifecycle.complete(task.pk, worker_id="@b", token=claimed.claim_token, result={})
    cleaned = cleanup.clean()
    assert [(c.path, c.removed) for c in cleaned] == [(theirs.path, True)]
    assert mine.path.exists() and not theirs.path.exists()
    assert other_id in theirs.branch


def test_a_branch_the_factory_did_not_make_is_never_adopted(repo):
    task = lifecycle.submit("Edit app", lane="backend", actor="cli")
    git(repo, "branch", workspace.branch_name(task))  # someone else's, by chance the same name
    with pytest.raises(workspace.WorkspaceError, match="was not made by this factory"):
        workspace.prepare(task)


def test_clean_keeps_a_worktree_with_uncommitted_files_and_says_why(repo, capsys):
    Worker.objects.create(worker_id="@b", lane="backend")
    task = lifecycle.submit("Edit app", lane="backend", actor="cli", pipeline="none")
    ws = workspace.prepare(task)
    (ws.path / "app.py").write_text("changed\n")
    (ws.path / "notes.txt").write_text("new\n")
    claimed = lifecycle.claim_next("@b")
    lifecycle.complete(task.pk, worker_id="@b", token=claimed.claim_token, result={})
    call_command("cleanworktrees", "--dry-run")
    assert f"kept {ws.path}: 2 uncommitted files" in capsys.readouterr().out
    call_command("cleanworktrees")
    out = capsys.readouterr().out
    assert f"kept {ws.path}: 2 uncommitted files" in out and "removed 0 of 1" in out
    assert (ws.path / "notes.txt").exists()
    ws.commit_all(author="A <a@example.com>", message="keep it")
    call_command("cleanworktrees")  # with no remote, committed is enough
    assert "removed 1 of 1" in capsys.readouterr().out and not ws.path.exists()


def test_clean_keeps_the_builders_worktree_while_its_review_is_pending(repo):
    Worker.objects.create(worker_id="@b", lane="backend")
    task = lifecycle.submit("Edit app", lane="backend", actor="cli")
    ws = workspace.prepare(task)
    claimed = lifecycle.claim_next("@b")
    lifecycle.complete(task.pk, worker_id="@b", token=claimed.claim_token, result={})
    assert Task.objects.filter(parent=task).exists()
    assert not {c.path: c.removed for c in cleanup.clean()}[ws.path]
    assert ws.path.exists()


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
