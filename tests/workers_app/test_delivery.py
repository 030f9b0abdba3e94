"""Delivery, the last step after every review passed: branch, merge (with conflicts), rework.

Real git throughout: a bare repository as the shared remote, a clone as the host, another clone
as a teammate who pushes to the base branch meanwhile. The worker's part (commit, push, the
merge check) is what `workspace` does for a builder run; the people's part goes through the CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from chatops_app.models import Notification
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task
from tests.workers_app.test_remote import AUTHOR, Hosts, git
from workers_app import delivery, workspace
from workers_app.models import Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(tmp_path, settings) -> Hosts:
    settings.VIBE_GIT_REMOTE = None
    settings.VIBE_BASE_BRANCH = ""
    settings.VIBE_MERGE_STYLE = "merge"
    Worker.objects.create(worker_id="@b", lane="backend")
    return Hosts(tmp_path, settings)


def teammate_pushes(hosts: Hosts, name: str, text: str) -> str:
    """Someone else's commit on the remote's main, made from a clone of their own."""
    other = hosts.tmp_path / "teammate"
    if not other.exists():
        git(hosts.tmp_path, "clone", "-q", str(hosts.remote), str(other))
    git(other, "pull", "-q", "origin", "main")
    (other / name).write_text(text)
    git(other, "add", ".")
    git(other, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", name)
    git(other, "push", "-q", "origin", "main")
    return git(other, "rev-parse", "HEAD")


def build_and_finish(task: Task, files: dict[str, str]) -> Task:
    """A builder run as the worker does it: write, commit, push, check, complete."""
    ws = workspace.prepare(task)
    for name, text in files.items():
        (ws.path / name).write_text(text)
    ws.commit_all(author=AUTHOR, message=f"task #{task.pk}")
    ws.push()
    change = ws.change()
    result = {
        **ws.snapshot(),
        "base_commit": change.base,
        "changed_files": change.files,
        "base_branch": ws.base_branch,
        "remote": ws.remote if ws.on_remote() else "",
        "conflicts": ws.merge_conflicts(),
    }
    claimed = lifecycle.claim_next("@b")
    assert claimed.pk == task.pk
    lifecycle.complete(task.pk, worker_id="@b", token=claimed.claim_token, result=result)
    return Task.objects.get(pk=task.pk)


def remote_file(hosts: Hosts, name: str) -> str:
    return git(hosts.remote, "show", f"main:{name}")


def test_branch_delivery_is_done_when_the_branch_is_pushed(hosts):
    task = lifecycle.submit("Add hello", lane="backend", actor="cli", pipeline="none")
    assert task.delivery == "branch"
    task = build_and_finish(task, {"hello.txt": "hi\n"})
    assert task.status == Status.COMPLETED
    assert task.delivery_state == "pushed" and task.base_branch == "main"
    assert hosts.remote_head(task.branch) == task.head_commit
    note = task.history.order_by("id").last().note
    assert note == f"completed; branch {task.branch} pushed to origin"


def test_branch_delivery_without_a_remote_is_committed(tmp_path, settings):
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "a")
    settings.VIBE_WORKSPACE, settings.VIBE_WORKTREES_DIR = str(repo), str(tmp_path / "trees")
    settings.VIBE_GIT_REMOTE = None
    Worker.objects.create(worker_id="@b", lane="backend")
    task = lifecycle.submit("Add b", lane="backend", actor="cli", pipeline="none")
    task = build_and_finish(task, {"b.txt": "b\n"})
    assert (task.status, task.delivery_state) == (Status.COMPLETED, "committed")
    assert task.delivery_summary == "committed on its branch"


def test_merge_delivery_waits_for_an_approver_then_merges_and_pushes_the_base(hosts, capsys):
    task = lifecycle.submit(
        "Add hello", lane="backend", actor="cli", pipeline="none", delivery="merge"
    )
    task = build_and_finish(task, {"hello.txt": "hi\n"})
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "awaiting_merge")
    assert task.conflicts == []
    told = Notification.objects.filter(task=task, event="awaiting_merge")
    assert told.count() == 2  # Slack and Discord
    # The base moved meanwhile, without touching hello.txt: the merge still goes in cleanly.
    theirs = teammate_pushes(hosts, "other.txt", "other\n")

    call_command("vibe", "merge", str(task.pk))
    assert f"Task #{task.pk} merged into main" in capsys.readouterr().out
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.delivery_state) == (Status.COMPLETED, "merged")
    merged = hosts.remote_head("main")
    assert task.merge_commit == merged
    parents = git(hosts.remote, "rev-list", "--parents", "-n", "1", merged).split()[1:]
    assert parents == [theirs, task.head_commit]  # a merge commit of the base and the branch
    assert remote_file(hosts, "hello.txt") == "hi"
    row = task.history.order_by("id").last()
    assert row.actor == "cli" and row.to_status == "completed"
    assert row.note == f"merged {task.branch} into main as {merged[:12]} and pushed to origin"

    with pytest.raises(CommandError, match="only work that passed every review"):
        call_command("vibe", "merge", str(task.pk))  # twice: refused, nothing changes
    assert hosts.remote_head("main") == merged


def test_a_conflicting_merge_changes_nothing_lists_the_files_and_offers_a_rebase(hosts):
    task = lifecycle.submit(
        "Change the app", lane="backend", actor="cli", pipeline="none", delivery="merge"
    )
    task = build_and_finish(task, {"app.py": "print('mine')\n"})
    assert task.delivery_state == "awaiting_merge"
    theirs = teammate_pushes(hosts, "app.py", "print('theirs')\n")

    with pytest.raises(delivery.MergeConflict) as refused:
        delivery.merge(task.pk, actor="user:alice")
    assert refused.value.files == ["app.py"]
    assert "conflicts with main in 1 file (app.py); nothing was merged" in str(refused.value)
    assert hosts.remote_head("main") == theirs  # untouched
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "conflict")
    assert task.conflicts == ["app.py"]
    assert task.delivery_summary == "conflicts with main in 1 file"
    assert task.history.order_by("id").last().actor == "user:alice"

    # A person asks for a rework instead: the conflict state is left behind.
    call_command("vibe", "rework", str(task.pk), "rebase please")
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.PENDING and task.delivery_state == ""
    assert task.context["findings"][0]["title"] == "rebase please"


def test_rebase_and_rework_names_the_conflicting_files(hosts):
    task = lifecycle.submit(
        "Change the app", lane="backend", actor="cli", pipeline="none", delivery="merge"
    )
    task = build_and_finish(task, {"app.py": "print('mine')\n"})
    teammate_pushes(hosts, "app.py", "print('theirs')\n")
    with pytest.raises(delivery.MergeConflict):
        delivery.merge(task.pk, actor="cli")
    from tasks_app.actions import ACTIONS

    task = ACTIONS["rebase"].perform(task.pk, actor="user:otto")
    asked = task.context["findings"][0]["detail"]
    assert "Rebase this branch onto the latest main" in asked and "app.py" in asked
    assert task.context["changes_requested_by"] == "user:otto"

    # The builder rebases and resolves; the change is measured from the new base.
    ws = workspace.prepare(task)
    git(ws.path, "fetch", "-q", "origin")
    rebased = subprocess_rebase_keeping_ours(ws.path)
    assert rebased
    ws.push()
    change = ws.change()
    assert change.base == hosts.remote_head("main")
    assert [f["path"] for f in change.files] == ["app.py"]
    assert ws.merge_conflicts() == []


def subprocess_rebase_keeping_ours(path: Path) -> bool:
    """What a builder does for "rebase": rebase onto the new base, resolve, continue."""
    import subprocess

    env_args = ["-c", "user.name=B", "-c", "user.email=b@example.com"]
    done = subprocess.run(
        ["git", *env_args, "rebase", "origin/main"], cwd=path, capture_output=True, text=True
    )
    if done.returncode != 0:
        (path / "app.py").write_text("print('mine and theirs')\n")
        git(path, "add", "app.py")
        subprocess.run(
            ["git", *env_args, "-c", "core.editor=true", "rebase", "--continue"],
            cwd=path,
            check=True,
            capture_output=True,
        )
    return True


def test_fast_forward_style_refuses_when_the_base_moved(hosts, settings):
    settings.VIBE_MERGE_STYLE = "fast-forward"
    task = lifecycle.submit("Add x", lane="backend", actor="cli", pipeline="none", delivery="merge")
    task = build_and_finish(task, {"x.txt": "x\n"})
    teammate_pushes(hosts, "y.txt", "y\n")
    with pytest.raises(delivery.MergeConflict, match="cannot be fast-forwarded"):
        delivery.merge(task.pk, actor="cli")
    assert Task.objects.get(pk=task.pk).status == Status.REVIEW_NEEDED


def test_fast_forward_style_moves_the_base_to_the_branch(hosts, settings):
    settings.VIBE_MERGE_STYLE = "fast-forward"
    task = lifecycle.submit("Add x", lane="backend", actor="cli", pipeline="none", delivery="merge")
    task = build_and_finish(task, {"x.txt": "x\n"})
    done = delivery.merge(task.pk, actor="cli")
    assert done.commit == task.head_commit == hosts.remote_head("main")


def test_merge_is_refused_for_the_wrong_delivery_or_state(hosts):
    branchy = lifecycle.submit("Add hello", lane="backend", actor="cli", pipeline="none")
    branchy = build_and_finish(branchy, {"hello.txt": "hi\n"})
    with pytest.raises(lifecycle.IllegalTransition, match="delivered as a branch"):
        delivery.merge(branchy.pk, actor="cli")
    waiting = lifecycle.submit("Later", lane="backend", actor="cli", delivery="merge")
    with pytest.raises(lifecycle.IllegalTransition, match="is pending"):
        delivery.merge(waiting.pk, actor="cli")
    with pytest.raises(lifecycle.TaskNotFound):
        delivery.merge(999999, actor="cli")


def test_a_person_asks_for_changes_on_delivered_work(hosts, capsys):
    task = lifecycle.submit("Add hello", lane="backend", actor="cli", pipeline="none")
    task = build_and_finish(task, {"hello.txt": "hi\n"})
    assert task.status == Status.COMPLETED
    call_command("vibe", "rework", str(task.pk), "Say hello in French too")
    assert f"Task #{task.pk} sent back for changes" in capsys.readouterr().out
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.PENDING and task.review_round == 1
    assert task.context["findings"][0]["detail"] == "Say hello in French too"
    assert task.context["round_base"] == 1  # the person's round: review rounds start afresh
    row = task.history.order_by("id").last()
    assert row.from_status == "completed" and row.note.startswith("changes requested: Say hello")

    # Rework runs on the same branch and worktree, from where the work stopped.
    ws = workspace.prepare(task)
    assert ws.branch == task.branch and ws.head() == task.head_commit

    with pytest.raises(CommandError, match="Say what should change"):
        call_command("vibe", "rework", str(task.pk), "   ")
    with pytest.raises(CommandError, match="is pending; changes can be asked for"):
        call_command("vibe", "rework", str(task.pk), "again")


def test_rework_needs_the_permission(hosts, viewer, operator):
    task = lifecycle.submit("Add hello", lane="backend", actor="cli", pipeline="none")
    task = build_and_finish(task, {"hello.txt": "hi\n"})
    with pytest.raises(CommandError, match="permission to rework"):
        call_command("vibe", "rework", str(task.pk), "nope", "--as", viewer.username)
    assert Task.objects.get(pk=task.pk).status == Status.COMPLETED
    call_command("vibe", "rework", str(task.pk), "yes", "--as", operator.username)
    assert Task.objects.get(pk=task.pk).status == Status.PENDING
    with pytest.raises(CommandError, match="permission to merge"):
        call_command("vibe", "merge", str(task.pk), "--as", operator.username)


# --- end to end, with real workers on two hosts ---------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_merge_delivery_end_to_end_with_workers_on_two_hosts(fleet, hosts, capsys):
    from tests.workers_app.conftest import agent_command

    task = lifecycle.submit("Write hello", lane="backend", actor="cli", delivery="merge")
    trees = {name: hosts.tmp_path / f"trees-{name}" for name in ("a", "b")}

    def env(name: str) -> dict[str, str]:
        return {"VIBE_WORKSPACE": str(hosts.clone(name)), "VIBE_WORKTREES_DIR": str(trees[name])}

    def run(worker_id: str, lane: str, command: str, host: str) -> None:
        args = [worker_id, "--lane", lane, "--once", "--agent-command", command]
        worker = fleet.start_plain(args, env=env(host))
        assert worker.wait(120) == 0, worker.output()

    run("@backend-a", "backend", agent_command("worktree_agent.py") + " --write hello.txt", "a")
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.REVIEW_NEEDED, task.last_error
    assert task.result["remote"] == "origin" and task.base_branch == "main"
    assert hosts.remote_head(task.branch) == task.head_commit  # committed by the worker, pushed
    verdict = agent_command("worktree_agent.py") + " --verdict pass"
    run("@security-b", "security", verdict, "b")  # the other host reviews the same commits
    run("@qa-b", "qa", verdict, "b")
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "awaiting_merge")
    assert task.conflicts == []
    assert {r.head_commit for r in task.children.all()} == {task.head_commit}

    hosts.use("b")  # an Approver on host B merges it
    call_command("vibe", "merge", str(task.pk), "--json")
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.delivery_state) == (Status.COMPLETED, "merged")
    assert git(hosts.remote, "show", "main:hello.txt").startswith("written by the worktree agent")
    assert hosts.remote_head("main") == task.merge_commit


def test_merging_with_a_remote_leaves_the_persons_checkout_alone(hosts):
    task = lifecycle.submit("Add x", lane="backend", actor="cli", pipeline="none", delivery="merge")
    task = build_and_finish(task, {"x.txt": "x\n"})
    checkout = hosts.clone("a")
    before = git(checkout, "rev-parse", "main")
    done = delivery.merge(task.pk, actor="cli")
    assert hosts.remote_head("main") == done.commit
    assert git(checkout, "rev-parse", "main") == before  # the person pulls when they like
    assert not (checkout / "x.txt").exists()


def test_merging_without_a_remote_moves_the_local_base(tmp_path, settings):
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "a")
    settings.VIBE_WORKSPACE, settings.VIBE_WORKTREES_DIR = str(repo), str(tmp_path / "trees")
    settings.VIBE_GIT_REMOTE, settings.VIBE_MERGE_STYLE = None, "merge"
    Worker.objects.create(worker_id="@b", lane="backend")
    task = lifecycle.submit("Add b", lane="backend", actor="cli", pipeline="none", delivery="merge")
    task = build_and_finish(task, {"b.txt": "b\n"})
    (repo / "notes.txt").write_text("mine, untracked\n")  # untracked work does not stop it
    done = delivery.merge(task.pk, actor="cli")
    assert git(repo, "rev-parse", "main") == done.commit
    assert (repo / "b.txt").read_text() == "b\n" and (repo / "notes.txt").exists()
    review = Task.objects.create(goal="r", lane="qa", parent=task, stage="review")
    with pytest.raises(lifecycle.IllegalTransition, match="is a review; merge the work"):
        delivery.merge(review.pk, actor="cli")
