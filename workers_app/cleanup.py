"""Cleanup that never loses work: `manage.py cleanworktrees`.

Only this instance's worktrees are looked at, and one is removed only when nothing would be lost.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
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
    root = workspace_root()
    git_root = root if root and root.is_dir() and is_git_repository(root) else None
    instance = instance_id()
    remote = git_remote(git_root) if git_root is not None else ""
    out: list[Cleaned] = []
    if worktrees_dir().is_dir():
        out += _clean_folder(
            worktrees_dir(), f"{instance}-task-", git_root, remote, instance, dry_run=dry_run
        )
    if scratch_dir().is_dir():
        out += _clean_folder(scratch_dir(), "task-", None, "", instance, dry_run=dry_run)
    return out


def _clean_folder(
    directory: Path,
    prefix: str,
    git_root: Path | None,
    remote: str,
    instance: str,
    *,
    dry_run: bool,
) -> list[Cleaned]:
    """One folder of task directories; `git_root` when they are that repository's worktrees."""
    with _locked(directory):
        if git_root is not None and remote:
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
        out = [
            _clean_one(path, task_id, git_root, remote, dry_run=dry_run)
            for path, task_id in _task_folders(directory, prefix)
        ]
        if git_root is not None and not dry_run:
            _git(git_root, "worktree", "prune")
    return out


def _task_folders(directory: Path, prefix: str) -> Iterator[tuple[Path, int]]:
    for path in sorted(directory.glob(f"{prefix}*")):
        if path.is_dir():
            with contextlib.suppress(ValueError):
                yield path, int(path.name.removeprefix(prefix))


def _clean_one(
    path: Path, task_id: int, git_root: Path | None, remote: str, *, dry_run: bool
) -> Cleaned:
    status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
    if status is not None and status not in FINISHED:
        return Cleaned(path, False, f"task {task_id} is {status}")
    busy = _open_users(task_id) if status is not None else ""
    if busy:
        return Cleaned(path, False, busy)
    tree_of = git_root if git_root is not None and (path / ".git").exists() else None
    unsaved = _unsaved_work(path, remote) if tree_of is not None else ""
    if unsaved:
        return Cleaned(path, False, unsaved, holds_work=True)
    why = "task is gone" if status is None else f"task {task_id} is {status}"
    if tree_of is not None:
        why += f", pushed to {remote}" if remote else ", all committed"
    if dry_run:
        return Cleaned(path, False, f"would remove: {why}")
    if tree_of is not None:
        try:  # never --force: git itself refuses a tree that is not clean
            _git(tree_of, "worktree", "remove", str(path))
        except WorkspaceError as exc:
            return Cleaned(path, False, f"git refused: {exc}", holds_work=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)  # scratch, or a half-made worktree
    path.with_name(f"{path.name}.base").unlink(missing_ok=True)
    return Cleaned(path, True, why)
