"""A shared git remote as the meeting point of hosts: fetch before work, push after, typed errors.

Two clones of one bare repository play two hosts sharing one factory database; the `settings`
fixture switches VIBE_WORKSPACE (and each host's worktree folder) between them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

from tasks_app import lifecycle
from tasks_app.choices import ERROR_TYPES, INFRASTRUCTURE_ERRORS, Status, error_hint
from tasks_app.models import Task
from tests.workers_app.conftest import agent_command
from workers_app import git as vibe_git
from workers_app import workspace
from workers_app.models import Instance, Worker

AUTHOR = "Builder <builder@example.com>"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(autouse=True)
def fresh_instance_id():
    workspace.instance_id.cache_clear()
    yield
    workspace.instance_id.cache_clear()


class Hosts:
    """A bare remote and two hosts' clones of it, each with its own worktree folder."""

    def __init__(self, tmp_path: Path, settings) -> None:
        self.tmp_path, self.settings = tmp_path, settings
        self.remote = tmp_path / "remote.git"
        git(tmp_path, "init", "-q", "--bare", "-b", "main", str(self.remote))
        seed = tmp_path / "seed"
        git(tmp_path, "clone", "-q", str(self.remote), str(seed))
        (seed / "app.py").write_text("print('hi')\n")
        git(seed, "add", ".")
        git(seed, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "s")
        git(seed, "push", "-q", "origin", "main")
        self.start = git(seed, "rev-parse", "HEAD")
        for name in ("a", "b"):
            git(tmp_path, "clone", "-q", str(self.remote), str(tmp_path / f"host-{name}"))
        self.use("a")

    def clone(self, name: str) -> Path:
        return self.tmp_path / f"host-{name}"

    def use(self, name: str) -> Path:
        self.settings.VIBE_WORKSPACE = str(self.clone(name))
        self.settings.VIBE_WORKTREES_DIR = str(self.tmp_path / f"trees-{name}")
        return self.clone(name)

    def remote_head(self, branch: str) -> str:
        return git(self.remote, "rev-parse", f"refs/heads/{branch}")


@pytest.fixture
def hosts(tmp_path, settings) -> Hosts:
    settings.VIBE_GIT_REMOTE = None  # the default: origin, since the clones have it
    settings.VIBE_BASE_BRANCH = ""
    return Hosts(tmp_path, settings)


def build(task: Task, *files: str) -> workspace.Workspace:
    """What a builder run amounts to: the agent writes files, the worker commits and pushes."""
    ws = workspace.prepare(task)
    for name in files:
        (ws.path / name).write_text(f"{name}\n")
    assert ws.commit_all(author=AUTHOR, message=f"task #{task.pk}")
    assert ws.push()
    return ws


def complete(task: Task, ws: workspace.Workspace, worker: str = "@b") -> Task:
    claimed = lifecycle.claim_next(worker)
    assert claimed.pk == task.pk
    change = ws.change()
    result = {**ws.snapshot(), "base_commit": change.base, "changed_files": change.files}
    lifecycle.complete(task.pk, worker_id=worker, token=claimed.claim_token, result=result)
    return Task.objects.get(pk=task.pk)


@pytest.mark.django_db
def test_builders_work_is_pushed_and_reviewed_at_the_same_commits_on_another_host(hosts):
    Worker.objects.create(worker_id="@b", lane="backend")
    task = lifecycle.submit("Add hello", lane="backend", actor="cli")
    ws = build(task, "hello.txt")
    assert ws.remote == "origin" and ws.base_commit == hosts.start
    assert hosts.remote_head(ws.branch) == ws.head()  # the bare repository has the commit
    task = complete(task, ws)
    review = Task.objects.get(parent=task)

    hosts.use("b")  # a worker on the other host, which has never seen the branch
    there = workspace.prepare(review)
    assert there.path != ws.path and str(there.path).startswith(str(hosts.tmp_path / "trees-b"))
    assert there.head() == task.head_commit == ws.head()
    assert there.base_commit == hosts.start
    assert [f["path"] for f in there.change().files] == ["hello.txt"]
    upstream = git(there.path, "rev-parse", "--abbrev-ref", "@{upstream}")
    assert upstream == f"origin/{ws.branch}"


@pytest.mark.django_db
def test_new_work_starts_from_the_freshly_fetched_base_not_the_stale_local_one(hosts):
    other = hosts.tmp_path / "other"
    git(hosts.tmp_path, "clone", "-q", str(hosts.remote), str(other))
    (other / "later.py").write_text("x = 2\n")
    git(other, "add", ".")
    git(other, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "l")
    git(other, "push", "-q", "origin", "main")
    task = lifecycle.submit("Build on the latest", lane="backend", actor="cli")
    ws = workspace.prepare(task)
    assert ws.base_commit == git(other, "rev-parse", "HEAD") != hosts.start
    assert (ws.path / "later.py").exists()


@pytest.mark.django_db
def test_rework_on_one_host_fast_forwards_the_others_worktree(hosts):
    task = lifecycle.submit("Add hello", lane="backend", actor="cli")
    first = build(task, "hello.txt")
    hosts.use("b")
    there = workspace.prepare(task)
    assert there.head() == first.head()
    hosts.use("a")
    second = build(task, "more.txt")  # rework on host A, pushed
    hosts.use("b")
    again = workspace.prepare(task)
    assert again.path == there.path and again.head() == second.head()
    assert (again.path / "more.txt").exists()


@pytest.mark.django_db
def test_a_review_refuses_a_local_branch_with_commits_the_remote_lacks(hosts):
    Worker.objects.create(worker_id="@b", lane="backend")
    task = lifecycle.submit("Add hello", lane="backend", actor="cli")
    task = complete(task, build(task, "hello.txt"))
    review = Task.objects.get(parent=task)
    hosts.use("b")
    there = workspace.prepare(review)
    (there.path / "stray.txt").write_text("x\n")
    there.commit_all(author=AUTHOR, message="not pushed")
    with pytest.raises(workspace.WorkspaceError) as caught:
        workspace.prepare(review)
    assert f"has 1 commit(s) origin/{there.branch} does not have" in str(caught.value)


@pytest.mark.django_db
def test_an_unreachable_remote_is_remote_unreachable(hosts):
    git(hosts.clone("a"), "remote", "set-url", "origin", str(hosts.tmp_path / "gone.git"))
    task = lifecycle.submit("Anything", lane="backend", actor="cli")
    with pytest.raises(vibe_git.RemoteError) as caught:
        workspace.prepare(task)
    assert caught.value.error_type == "remote_unreachable"
    assert ERROR_TYPES["remote_unreachable"].retryable


@pytest.mark.django_db
def test_a_push_refused_by_a_hook_is_push_rejected(hosts):
    hook = hosts.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no pushes today' >&2\nexit 1\n")
    hook.chmod(0o755)
    task = lifecycle.submit("Add hello", lane="backend", actor="cli")
    ws = workspace.prepare(task)
    (ws.path / "hello.txt").write_text("hi\n")
    ws.commit_all(author=AUTHOR, message="hello")
    with pytest.raises(vibe_git.RemoteError) as caught:
        ws.push()
    assert caught.value.error_type == "push_rejected"
    assert "no pushes today" in str(caught.value)


def test_remote_errors_are_told_apart_by_gits_words():
    assert vibe_git.remote_error_type("fatal: Authentication failed for 'https://x/'") == (
        "remote_auth"
    )
    assert vibe_git.remote_error_type(
        "git@x: Permission denied (publickey).\nfatal: Could not read from remote repository."
    ) == ("remote_auth")
    assert vibe_git.remote_error_type(
        "fatal: could not read Username for 'https://x': terminal prompts disabled"
    ) == ("remote_auth")
    assert vibe_git.remote_error_type(
        " ! [rejected]  b -> b (non-fast-forward)\nerror: failed to push some refs"
    ) == ("push_rejected")
    assert vibe_git.remote_error_type(
        "fatal: '/x.git' does not appear to be a git repository\n"
        "Please make sure you have the correct access rights"
    ) == ("remote_unreachable")
    assert vibe_git.remote_error_type("Could not resolve host: example.invalid") == (
        "remote_unreachable"
    )
    for name in ("remote_auth", "remote_unreachable"):
        assert name in INFRASTRUCTURE_ERRORS and error_hint(name)
    assert ERROR_TYPES["push_rejected"].retryable
    assert not ERROR_TYPES["remote_auth"].retryable


@pytest.mark.django_db
def test_cleanworktrees_keeps_unpushed_or_dirty_work_and_removes_pushed(hosts, capsys):
    Worker.objects.create(worker_id="@b", lane="backend", capacity_limit=5)
    pushed = lifecycle.submit("Pushed", lane="backend", actor="cli", pipeline="none")
    unpushed = lifecycle.submit("Unpushed", lane="backend", actor="cli", pipeline="none")
    dirty = lifecycle.submit("Dirty", lane="backend", actor="cli", pipeline="none")
    done = complete(pushed, build(pushed, "a.txt"))
    kept = workspace.prepare(unpushed)
    for name in ("b.txt", "c.txt", "d.txt"):
        (kept.path / name).write_text("x\n")
        kept.commit_all(author=AUTHOR, message=name)
    complete(unpushed, kept)
    messy = workspace.prepare(dirty)
    (messy.path / "e.txt").write_text("x\n")
    (messy.path / "app.py").write_text("changed\n")
    complete(dirty, messy)
    assert done.status == Status.COMPLETED

    call_command("cleanworktrees", "--dry-run")
    out = capsys.readouterr().out
    assert f"kept {kept.path}: 3 commits not pushed to origin" in out
    assert f"kept {messy.path}: 2 uncommitted files" in out
    assert "would remove: task" in out and "pushed to origin" in out
    call_command("cleanworktrees")
    out = capsys.readouterr().out
    assert f"kept {kept.path}: 3 commits not pushed to origin" in out
    assert "removed 1 of 3" in out
    assert not workspace.worktree_path(pushed.pk).exists()
    assert kept.path.exists() and (messy.path / "e.txt").exists()
    assert hosts.remote_head(workspace.branch_name(pushed))  # the work lives on


# --- two real workers on two hosts ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_workers_on_two_hosts_build_push_and_review_the_same_commits(fleet, hosts):
    task = lifecycle.submit("Write hello", lane="backend", actor="cli", pipeline="none")
    review_free = lifecycle.submit("Write more", lane="backend", actor="cli")
    trees = {name: hosts.tmp_path / f"trees-{name}" for name in ("a", "b")}

    def env(name: str) -> dict[str, str]:
        return {"VIBE_WORKSPACE": str(hosts.clone(name)), "VIBE_WORKTREES_DIR": str(trees[name])}

    writer = agent_command("worktree_agent.py") + " --write hello.txt"  # writes, never commits
    for args, name in (
        (["@backend-a", "--lane", "backend", "--once", "--agent-command", writer], "a"),
        (["@backend-a", "--lane", "backend", "--once", "--agent-command", writer], "a"),
    ):
        worker = fleet.start_plain(args, env=env(name))
        assert worker.wait(120) == 0, worker.output()
    task, built = Task.objects.get(pk=task.pk), Task.objects.get(pk=review_free.pk)
    assert task.status == Status.COMPLETED, task.last_error
    assert built.status == Status.REVIEW_NEEDED, built.last_error
    instance = Instance.objects.get().instance_id
    assert task.branch.startswith(f"vibe/{instance}/task-{task.pk}-write-hello")
    # Committed by the worker, pushed: the bare repository has the builder's head.
    assert hosts.remote_head(task.branch) == task.head_commit
    assert hosts.remote_head(built.branch) == built.head_commit

    review = Task.objects.filter(parent=built).order_by("id").first()
    verdict = agent_command("worktree_agent.py") + " --verdict pass"
    worker = fleet.start_plain(
        [
            "@reviewer-b",
            "--lane",
            review.lane,
            "--once",
            "--agent-command",
            verdict,
        ],
        env=env("b"),
    )
    assert worker.wait(120) == 0, worker.output()
    review = Task.objects.get(pk=review.pk)
    assert review.status == Status.COMPLETED, (review.last_error, worker.output())
    tree_b = trees["b"] / f"{instance}-task-{built.pk}"
    assert git(tree_b, "rev-parse", "HEAD") == built.head_commit
    assert (tree_b / "hello.txt").exists()
    assert review.head_commit == built.head_commit
