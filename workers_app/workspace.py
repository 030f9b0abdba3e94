"""Where an agent works: a git worktree per piece of work, or a plain directory.

When `VIBE_WORKSPACE` is a git repository, each builder task gets its own worktree on branch
`vibe/task-<id>` (under `VIBE_WORKTREES_DIR`), so parallel agents never edit the same checkout;
its reviews and its rework run in that same worktree, so the auditors see exactly what was built.
When it is a plain directory, agents work in it directly. When it is unset, each task gets an
empty scratch directory, so an agent never edits this repository by accident.

Git commands run under a file lock: `git worktree add` from two workers at once would race on the
repository's administrative files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from tasks_app.models import Status, Task

logger = logging.getLogger(__name__)
GIT_TIMEOUT_SECONDS = 120
MAX_DIFF_STAT_CHARS = 8000


MAX_CHANGED_FILES = 2000


class WorkspaceError(RuntimeError):
    """The task's workspace could not be prepared; the message says why."""


@dataclass
class Change:
    base: str = ""
    head: str = ""
    files: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.files


def split_author(author: str) -> tuple[str, str]:
    """'Name <email>' → (name, email); a bare name gets an address at this host."""
    author = author.strip()
    if "<" in author and author.endswith(">"):
        name, _, email = author[:-1].partition("<")
        return name.strip() or "Vibe Factory", email.strip()
    name = author or "Vibe Factory"
    return name, f"{name.strip('@').replace(' ', '-') or 'vibe'}@{socket.gethostname()}"


@dataclass
class Workspace:
    path: Path
    branch: str = ""
    base_commit: str = ""
    is_git: bool = False

    def head(self) -> str:
        return _git(self.path, "rev-parse", "HEAD").strip() if self.is_git else ""

    def is_dirty(self) -> bool:
        """Tracked changes or new files git does not ignore."""
        return self.is_git and bool(_git(self.path, "status", "--porcelain").strip())

    def git_common_dir(self) -> Path | None:
        """The repository's own git folder, which a builder's commits write to."""
        if not self.is_git:
            return None
        common = Path(_git(self.path, "rev-parse", "--git-common-dir").strip())
        return common if common.is_absolute() else (self.path / common).resolve()

    def commit_all(self, *, author: str, message: str) -> bool:
        """Commit what the agent left (tracked changes and new, not-ignored files).

        False when there was nothing to commit: the agent committed everything itself.
        """
        if not self.is_dirty():
            return False
        _git(self.path, "add", "--all")
        name, email = split_author(author)
        _git(
            self.path,
            "-c",
            f"user.name={name}",
            "-c",
            f"user.email={email}",
            "commit",
            "--quiet",
            "--no-verify",
            f"--author={name} <{email}>",
            "-m",
            message,
        )
        return True

    def change(self, base: str | None = None) -> Change:
        """The builder's change from `base` (the work's base commit) to HEAD, file by file."""
        if not self.is_git:
            return Change()
        base = base or self.base_commit
        head = self.head()
        files = []
        if base and base != head:
            out = _git(self.path, "diff", "--numstat", "--no-renames", f"{base}..{head}")
            for line in out.splitlines():
                added, removed, path = (line.split("\t", 2) + ["", "", ""])[:3]
                files.append(
                    {
                        "path": path,
                        "added": int(added) if added.isdigit() else None,
                        "removed": int(removed) if removed.isdigit() else None,
                    }
                )
        return Change(base=base, head=head, files=files[:MAX_CHANGED_FILES])

    def set_aside(self, before: str, ref: str) -> str:
        """Move whatever a reviewer changed off the branch, onto `ref`; the branch is reset.

        Returns the commit the changes were kept at ("" when nothing changed).
        """
        if not self.is_git:
            return ""
        if self.is_dirty():
            _git(self.path, "add", "--all")
            _git(
                self.path,
                "-c",
                "user.name=Vibe Factory",
                "-c",
                "user.email=vibe@localhost",
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                "changes a reviewer made, set aside",
            )
        head = self.head()
        if head == before:
            return ""
        _git(self.path, "update-ref", ref, head)
        _git(self.path, "reset", "--quiet", "--hard", before)
        return head

    def snapshot(self) -> dict[str, str]:
        """Branch, head commit and diff stat for the task's result (empty outside git)."""
        if not self.is_git:
            return {}
        head = _git(self.path, "rev-parse", "HEAD").strip()
        stat = _git(self.path, "diff", "--stat", self.base_commit or "HEAD").strip()
        untracked = [
            line
            for line in _git(self.path, "status", "--porcelain").splitlines()
            if line.startswith("??")
        ]
        if untracked:
            stat = (stat + "\n" if stat else "") + f"{len(untracked)} untracked file(s)"
        return {"branch": self.branch, "head_commit": head, "diff_stat": stat[:MAX_DIFF_STAT_CHARS]}


def workspace_root() -> Path | None:
    """The repository (or folder) agents work in; None means a scratch folder per task."""
    raw = getattr(settings, "VIBE_WORKSPACE", "")
    return Path(raw).expanduser() if raw else None


def worktrees_dir() -> Path:
    """Outside the repository, so its own checkout never sees the worktrees."""
    raw = getattr(settings, "VIBE_WORKTREES_DIR", "")
    if raw:
        return Path(raw).expanduser()
    var = Path(settings.VAR_DIR)
    return var.parent / f"{var.name}-worktrees"


def scratch_dir() -> Path:
    """Empty per-task folders, used when no VIBE_WORKSPACE is set (beside the worktrees)."""
    return worktrees_dir().parent / (worktrees_dir().name + "-scratch")


def agent_home(task: Task) -> Path:
    """A home folder per piece of work, kept across its runs so sessions can resume.

    Agents never get the worker's own home: their CLIs' state, caches and any login live here.
    """
    path = worktrees_dir().parent / (worktrees_dir().name + "-homes") / f"task-{work_root(task).pk}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise WorkspaceError(
            "git is not installed, but VIBE_WORKSPACE is a git repository"
        ) from None
    except subprocess.TimeoutExpired:
        raise WorkspaceError(f"git {' '.join(args)} took over {GIT_TIMEOUT_SECONDS}s") from None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {err}")
    return done.stdout.decode("utf-8", "replace")


def is_git_repository(path: Path) -> bool:
    """Worktrees only make sense inside git; any other folder is used as it is."""
    try:
        return _git(path, "rev-parse", "--is-inside-work-tree").strip() == "true"
    except WorkspaceError:
        return False


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def work_root(task: Task) -> Task:
    """The builder task whose worktree this task uses (reviews use their parent's)."""
    root = task
    seen = {root.pk}
    while root.stage and root.parent_id and root.parent_id not in seen:
        root = root.parent
        seen.add(root.pk)
    return root


def branch_name(task_id: int) -> str:
    """One branch per piece of work, named so a person can find it from the task."""
    return f"vibe/task-{task_id}"


def prepare(task: Task) -> Workspace:
    """Create or reuse the directory the agent for `task` runs in."""
    root = workspace_root()
    if root is None:
        path = scratch_dir() / f"task-{work_root(task).pk}"
        path.mkdir(parents=True, exist_ok=True)
        return Workspace(path)
    if not root.is_dir():
        raise WorkspaceError(f"VIBE_WORKSPACE={root} is not a directory")
    if not is_git_repository(root):
        return Workspace(root)
    owner = work_root(task)
    branch = branch_name(owner.pk)
    trees = worktrees_dir()
    path = trees / f"task-{owner.pk}"
    base_file = trees / f"task-{owner.pk}.base"
    with _locked(trees):
        if not (path / ".git").exists():
            if path.exists():
                shutil.rmtree(path)  # a half-made worktree from a crash
            _git(root, "worktree", "prune")
            has_branch = (
                subprocess.run(
                    ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                    cwd=root,
                    capture_output=True,
                    check=False,
                ).returncode
                == 0
            )
            if has_branch:
                _git(root, "worktree", "add", str(path), branch)
            else:
                base = _git(root, "rev-parse", "HEAD").strip()
                _git(root, "worktree", "add", "-b", branch, str(path), base)
                base_file.write_text(base)
        base_commit = base_file.read_text().strip() if base_file.exists() else ""
        if not base_commit:
            base_commit = _git(path, "merge-base", "HEAD", _git(root, "rev-parse", "HEAD").strip())
            base_commit = base_commit.strip()
            base_file.write_text(base_commit)
    return Workspace(path, branch=branch, base_commit=base_commit, is_git=True)


@dataclass
class Cleaned:
    path: Path
    removed: bool
    reason: str


def _in_use(task_id: int) -> bool:
    return (
        Task.objects.filter(pk=task_id, status=Status.IN_PROGRESS).exists()
        or Task.objects.filter(parent_id=task_id, status=Status.IN_PROGRESS).exists()
    )


FINISHED = (Status.COMPLETED, Status.CANCELLED)


def clean(*, dry_run: bool = False) -> list[Cleaned]:
    """Remove worktrees and scratch directories of finished work; keep every one in use.

    The branch is kept: it is where the work lives. Only completed and cancelled work is cleaned:
    dead-letter and blocked tasks may be retried by a person and would want their worktree back.
    """
    out: list[Cleaned] = []
    root = workspace_root()
    git_root = root if root and root.is_dir() and is_git_repository(root) else None
    for directory, is_worktree in ((worktrees_dir(), True), (scratch_dir(), False)):
        if not directory.is_dir():
            continue
        with _locked(directory):
            for path in sorted(directory.glob("task-*")):
                if not path.is_dir():
                    continue
                try:
                    task_id = int(path.name.removeprefix("task-"))
                except ValueError:
                    continue
                status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
                if status is not None and (status not in FINISHED or _in_use(task_id)):
                    out.append(Cleaned(path, False, f"task {task_id} is {status}"))
                    continue
                why = "task is gone" if status is None else f"task {task_id} is {status}"
                if dry_run:
                    out.append(Cleaned(path, False, f"would remove: {why}"))
                    continue
                if is_worktree and git_root is not None:
                    try:
                        _git(git_root, "worktree", "remove", "--force", str(path))
                    except WorkspaceError as exc:
                        logger.warning("%s", exc)
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
                (directory / f"task-{task_id}.base").unlink(missing_ok=True)
                out.append(Cleaned(path, True, why))
            if is_worktree and git_root is not None and not dry_run:
                _git(git_root, "worktree", "prune")
    return out
