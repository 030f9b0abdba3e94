"""Cleanup that never loses work: `manage.py cleanworktrees`.

Only this instance's worktrees are looked at, and one is removed only when nothing would be lost.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tasks_app.choices import Status
from tasks_app.models import Task

from .git import WorkspaceError, _count, _git, _remote_git, is_git_repository
from .workspace import (
    _locked,
    git_remote,
    instance_id,
    scratch_dir,
    workspace_root,
    worktrees_dir,
)


@dataclass
class Cleaned:
    path: Path
    removed: bool
    reason: str
    holds_work: bool = False  # kept because removing it would lose work


def _open_users(task_id: int) -> str:
    """Why the worktree is still in use ("" when nothing open uses it): the task or its reviews."""
    if Task.objects.filter(pk=task_id, status=Status.IN_PROGRESS).exists():
        return f"task {task_id} is in_progress"
    ids = [task_id]
    seen = set(ids)
    while ids:  # reviews, and their own stage tasks, work in the builder's worktree
        children = list(
            Task.objects.filter(parent_id__in=ids)
            .exclude(stage="")
            .values_list("pk", "status", named=True)
        )
        for child in children:
            if child.status not in FINISHED:
                return f"its review task {child.pk} is {child.status}"
        ids = [c.pk for c in children if c.pk not in seen]
        seen.update(ids)
    return ""


FINISHED = (Status.COMPLETED, Status.CANCELLED)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _unsaved_work(path: Path, remote: str) -> str:
    """Why removing this worktree would lose work ("" when it would not)."""
    dirty = [line for line in _git(path, "status", "--porcelain").splitlines() if line.strip()]
    if dirty:
        return _plural(len(dirty), "uncommitted file")
    if not remote:
        return ""  # committed on its branch, which is kept
    unpushed = _count(path, "HEAD", "--not", f"--remotes={remote}")
    if unpushed:
        return f"{_plural(unpushed, 'commit')} not pushed to {remote}"
    return ""


def clean(*, dry_run: bool = False) -> list[Cleaned]:
    """Remove worktrees and scratch directories of finished work; never one holding work.

    The branch is kept: it is where the work lives. Only completed and cancelled work is cleaned:
    dead-letter and blocked tasks may be retried by a person and would want their worktree back.
    A worktree is removed only when nothing would be lost: its tree is clean and its head is on
    the remote (pushed, or merged into the base), or with no remote, committed. Only this
    instance's worktrees are looked at; another factory's in the same folder are not ours.
    """
    out: list[Cleaned] = []
    root = workspace_root()
    git_root = root if root and root.is_dir() and is_git_repository(root) else None
    instance = instance_id()
    remote = git_remote(git_root) if git_root is not None else ""
    for directory, is_worktree in ((worktrees_dir(), True), (scratch_dir(), False)):
        if not directory.is_dir():
            continue
        prefix = f"{instance}-task-" if is_worktree else "task-"
        with _locked(directory):
            if is_worktree and git_root is not None and remote:
                # What is on the remote now, not when this host last looked.
                _remote_git(
                    git_root,
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--prune",
                    remote,
                    f"+refs/heads/vibe/{instance}/*:refs/remotes/{remote}/vibe/{instance}/*",
                )
            for path in sorted(directory.glob(f"{prefix}*")):
                if not path.is_dir():
                    continue
                try:
                    task_id = int(path.name.removeprefix(prefix))
                except ValueError:
                    continue
                status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
                if status is not None and status not in FINISHED:
                    out.append(Cleaned(path, False, f"task {task_id} is {status}"))
                    continue
                busy = _open_users(task_id) if status is not None else ""
                if busy:
                    out.append(Cleaned(path, False, busy))
                    continue
                is_tree = is_worktree and git_root is not None and (path / ".git").exists()
                unsaved = _unsaved_work(path, remote) if is_tree else ""
                if unsaved:
                    out.append(Cleaned(path, False, unsaved, holds_work=True))
                    continue
                why = "task is gone" if status is None else f"task {task_id} is {status}"
                if is_tree:
                    why += f", pushed to {remote}" if remote else ", all committed"
                if dry_run:
                    out.append(Cleaned(path, False, f"would remove: {why}"))
                    continue
                if is_tree:
                    try:  # never --force: git itself refuses a tree that is not clean
                        _git(git_root, "worktree", "remove", str(path))
                    except WorkspaceError as exc:
                        out.append(Cleaned(path, False, f"git refused: {exc}", holds_work=True))
                        continue
                elif path.exists():
                    shutil.rmtree(path, ignore_errors=True)  # scratch, or a half-made worktree
                (directory / f"{path.name}.base").unlink(missing_ok=True)
                out.append(Cleaned(path, True, why))
            if is_worktree and git_root is not None and not dry_run:
                _git(git_root, "worktree", "prune")
    return out
