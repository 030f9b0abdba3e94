"""Merge delivery: an Approver's "Merge" takes a task's branch into its base branch.

The merge is made in a throwaway worktree at the base's tip (freshly fetched when there is a
shared remote), so no one's checkout and no task's worktree is touched; with a remote the new
base is pushed with a plain push, which fails rather than overwrite a base that moved meanwhile.
A merge that would conflict changes nothing: the files are recorded on the task, and the person
is offered "Rebase and rework". Only after git succeeded does the lifecycle mark the task merged.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from tasks_app import lifecycle
from tasks_app.choices import Delivery, DeliveryState, Status
from tasks_app.lifecycle.delivery import files_phrase
from tasks_app.models import Task

from . import workspace as ws
from .workspace import WorkspaceError

MERGEABLE = (DeliveryState.AWAITING_MERGE, DeliveryState.CONFLICT)


class MergeConflict(lifecycle.IllegalTransition):
    """The branch does not merge cleanly into its base; nothing was merged."""

    def __init__(self, message: str, files: list[str]) -> None:
        super().__init__(message)
        self.files = files


class MergeFailed(lifecycle.IllegalTransition):
    """Git could not merge or push (the message says why); nothing was recorded as merged."""


@dataclass
class Merged:
    task: Task
    commit: str
    pushed_to: str


def _mergeable(task_id: int | str) -> Task:
    task = lifecycle.moves.load(task_id, lock=False)
    if task.is_review:
        raise lifecycle.IllegalTransition(
            f"task {task.pk} is a review; merge the work it reviews (task #{task.parent_id})"
        )
    if task.delivery != Delivery.MERGE:
        how = task.get_delivery_display().lower()
        raise lifecycle.IllegalTransition(
            f"task {task.pk} is delivered as a {how}, not merged by the factory"
            + (f"; merge its pull request on GitHub ({task.pr_url})" if task.pr_url else "")
        )
    if task.status != Status.REVIEW_NEEDED or task.delivery_state not in MERGEABLE:
        state = f", {task.get_delivery_state_display().lower()}" if task.delivery_state else ""
        raise lifecycle.IllegalTransition(
            f"task {task.pk} is {task.get_status_display().lower()}{state}; only work that "
            "passed every review and awaits merge can be merged"
        )
    return task


def _repository() -> Path:
    root = ws.workspace_root()
    if root is None or not root.is_dir() or not ws.is_git_repository(root):
        raise MergeFailed(
            "merging needs VIBE_WORKSPACE to be the git repository on this host "
            f"(it is {str(root) if root else 'unset'}); merge the branch by hand, or run this "
            "where the repository is"
        )
    return root


def _checked_out_at(root: Path, branch: str) -> Path | None:
    """The worktree that has `branch` checked out, if any (the person's own checkout, say)."""
    current: Path | None = None
    for line in ws._git(root, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            current = Path(line.removeprefix("worktree "))
        elif line == f"branch refs/heads/{branch}":
            return current
    return None


def merge(task_id: int | str, *, actor: str) -> Merged:
    """Merge the task's branch into its base (VIBE_MERGE_STYLE), push it, mark it merged."""
    task = _mergeable(task_id)
    root = _repository()
    branch, base = task.branch, task.base_branch
    if not branch:
        raise MergeFailed(f"task {task.pk} has no branch to merge")
    try:
        with ws._locked(ws.worktrees_dir()):
            remote = ws.git_remote(root)
            base = base or ws.base_branch(root, remote)
            if remote:
                ws.fetch(root, remote, base, branch)
            base_ref = f"refs/remotes/{remote}/{base}" if remote else f"refs/heads/{base}"
            tip = ws._rev(root, base_ref)
            head = ws._rev(root, f"refs/remotes/{remote}/{branch}" if remote else branch)
            if not tip or not head:
                missing = base_ref if not tip else branch
                raise MergeFailed(f"cannot merge task {task.pk}: {missing} does not exist")
            commit = _merge_commit(root, task, tip, head, base)
            if commit == tip:
                raise MergeFailed(f"{branch} is already in {base}; nothing to merge")
            if remote:
                ws._remote_git(root, "push", "--quiet", remote, f"{commit}:refs/heads/{base}")
                ws._git(root, "update-ref", base_ref, commit)
            _advance_local(root, base, tip, commit, pushed=bool(remote))
    except MergeConflict as exc:
        lifecycle.record_conflicts(task.pk, exc.files, actor=actor)
        raise
    except WorkspaceError as exc:
        raise MergeFailed(f"could not merge task {task.pk}: {exc}") from None
    where = f" and pushed to {remote}" if remote else ""
    note = f"merged {branch} into {base} as {commit[:12]}{where}"
    done = lifecycle.merged(task.pk, actor=actor, merge_commit=commit, note=note)
    return Merged(done, commit, remote)


def _merge_commit(root: Path, task: Task, tip: str, head: str, base: str) -> str:
    """Make the merge in a throwaway worktree; returns the new base commit."""
    style = settings.VIBE_MERGE_STYLE
    if ws._is_ancestor(root, tip, head) and style == "fast-forward":
        return head
    if style == "fast-forward":
        behind = ws._count(root, tip, f"^{head}")
        raise MergeConflict(
            f"task {task.pk} cannot be fast-forwarded: {base} has {behind} commit(s) its branch "
            "does not (VIBE_MERGE_STYLE=fast-forward); rebase and rework",
            [],
        )
    scratch = ws.worktrees_dir().parent / (ws.worktrees_dir().name + "-merges")
    path = scratch / f"task-{task.pk}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True, exist_ok=True)
    ws._git(root, "worktree", "add", "--quiet", "--detach", str(path), tip)
    try:
        name, email = ws.split_author(settings.VIBE_GIT_AUTHOR or "Vibe Factory")
        first = (task.goal.strip().splitlines() or [""])[0][:72]
        done = ws._run_git(
            path,
            "-c",
            f"user.name={name}",
            "-c",
            f"user.email={email}",
            "merge",
            "--no-ff",
            "--no-verify",
            "-m",
            f"Merge task #{task.pk}: {first}",
            head,
        )
        if done.returncode != 0:
            files = sorted(
                set(ws._git(path, "diff", "--name-only", "--diff-filter=U").split("\n")) - {""}
            )
            if files:
                raise MergeConflict(
                    f"task {task.pk} conflicts with {base} in {files_phrase(files)}; "
                    "nothing was merged. Rebase and rework asks the builder to rebase it",
                    files,
                )
            err = done.stderr.decode("utf-8", "replace").strip()
            raise MergeFailed(f"git merge failed for task {task.pk}: {err}")
        return ws._git(path, "rev-parse", "HEAD").strip()
    finally:
        ws._run_git(root, "worktree", "remove", "--force", str(path))
        shutil.rmtree(path, ignore_errors=True)


def _advance_local(root: Path, base: str, old: str, new: str, *, pushed: bool) -> None:
    """Without a remote, move the local base branch to the merge (never behind someone's
    uncommitted work); with one, leave local branches and checkouts alone."""
    local = ws._rev(root, f"refs/heads/{base}")
    if not local or pushed:
        return  # with a remote the merge is there; people's checkouts catch up when they pull
    if local != old and not ws._is_ancestor(root, local, new):
        raise MergeFailed(f"the local {base} moved while merging; merge again")
    checkout = _checked_out_at(root, base)
    if checkout is None:
        ws._git(root, "update-ref", f"refs/heads/{base}", new, local)
        return
    if ws._git(checkout, "status", "--porcelain", "--untracked-files=no").strip():
        raise MergeFailed(
            f"{base} is checked out in {checkout} with uncommitted changes; commit or stash "
            "them, then merge again"
        )
    ws._git(checkout, "merge", "--quiet", "--ff-only", new)


def rebase_comment(task: Task) -> str:
    """What "Rebase and rework" asks of the builder."""
    base = task.base_branch or "the base branch"
    files = list(task.conflicts or [])
    where = f" It conflicts in {', '.join(files)}." if files else ""
    return (
        f"Rebase this branch onto the latest {base} and resolve the conflicts, keeping the "
        f"intent of both sides.{where} Run the tests, then commit."
    )
