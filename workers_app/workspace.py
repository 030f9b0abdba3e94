"""Where an agent works: a git worktree per piece of work, or a plain directory.

When `VIBE_WORKSPACE` is a git repository, each builder task gets its own worktree on branch
`vibe/<instance>/task-<id>-<slug>` (under `VIBE_WORKTREES_DIR`, folder `<instance>-task-<id>`), so
parallel agents never edit the same checkout; its reviews and its rework run in that same
worktree, so the auditors see exactly what was built. The instance is this factory database's own
id: two factories on one repository never share a branch or clean each other's worktrees.

With a shared remote (`VIBE_GIT_REMOTE`, by default `origin`) it is where hosts meet: new work
starts from the freshly fetched base branch, each builder run's commits are pushed, and a review
or rework on any host fetches the branch first, so every host works on the same commits.

When `VIBE_WORKSPACE` is a plain directory, agents work in it directly. When it is unset, each
task gets an empty scratch directory, so an agent never edits this repository by accident.

Git commands run under a file lock: `git worktree add` from two workers at once would race on the
repository's administrative files. Git never prompts: a credential it would ask for is a typed
`remote_auth` failure, not a worker hung on a terminal nobody reads.

A new worktree gets `VIBE_WORKTREE_SETUP` (say `uv sync` or `npm ci`) run in it once, before its
first agent; a reused one (reviews, rework) does not. A marker beside the worktree says its setup
has not finished yet: a failed setup removes the worktree, and one a crash cut short is made
again, so no attempt ever starts in a half-set-up tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import re
import shutil
import socket
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from tasks_app.models import Task

from .git import (
    WorkspaceError,
    _count,
    _git,
    _is_ancestor,
    _remote_git,
    _rev,
    _run_git,
    is_git_repository,
)
from .models import Instance
from .setup import Setup, SetupError, run_setup, setup_command

logger = logging.getLogger(__name__)
MAX_DIFF_STAT_CHARS = 8000


MAX_CHANGED_FILES = 2000


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
    remote: str = ""  # the shared remote the branch is pushed to ("" = none)
    remote_head: str = ""  # the branch's head on the remote when last fetched or pushed
    base_branch: str = ""  # the branch the work starts from and is delivered into
    setup: Setup | None = None  # VIBE_WORKTREE_SETUP, when this preparation made the worktree

    def on_remote(self) -> bool:
        """The branch's head is on the shared remote (pushed by this run or an earlier one)."""
        return bool(self.is_git and self.remote and self.remote_head == self.head())

    def _base_tip(self) -> str:
        if not (self.is_git and self.base_branch):
            return ""
        ref = f"refs/remotes/{self.remote}/{self.base_branch}" if self.remote else ""
        return _rev(self.path, ref or f"refs/heads/{self.base_branch}")

    def merge_conflicts(self) -> list[str] | None:
        """Files the branch would conflict in, merged into its base now ([] = cleanly).

        None when it cannot be told (no base branch). `git merge-tree` merges in memory: the
        worktree and the branches are never touched.
        """
        base = self._base_tip()
        if not base:
            return None
        done = _run_git(
            self.path, "merge-tree", "--write-tree", "--name-only", "--no-messages", base, "HEAD"
        )
        if done.returncode == 0:
            return []
        if done.returncode != 1:
            return None
        names = done.stdout.decode("utf-8", "replace").splitlines()[1:]
        return sorted({name for name in names if name.strip()})

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

    def push(self) -> bool:
        """Push the branch to the shared remote; False when there is none or it is up to date.

        A plain push, so someone else's commits on the remote branch are never overwritten; only
        when the agent rewrote what it had pushed (an amend in rework) is it forced, and then
        only over the head this worktree last saw there.
        """
        if not (self.is_git and self.remote):
            return False
        head = self.head()
        if head == self.remote_head:
            return False
        args = ["push", "--quiet", self.remote, f"refs/heads/{self.branch}"]
        if self.remote_head and not _is_ancestor(self.path, self.remote_head, head):
            args.insert(2, f"--force-with-lease=refs/heads/{self.branch}:{self.remote_head}")
        _remote_git(self.path, *args)
        self.remote_head = head
        return True

    def change(self, base: str | None = None) -> Change:
        """The builder's change from `base` (the work's base commit) to HEAD, file by file."""
        if not self.is_git:
            return Change()
        base = base or self.base_commit
        head = self.head()
        tip = self._base_tip()
        if base and tip:
            # Rebased onto a newer base (a "rebase and rework"): the change starts there now.
            newest = _run_git(self.path, "merge-base", head, tip).stdout.decode().strip()
            if newest and newest != base and _is_ancestor(self.path, base, newest):
                base = newest
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
    _make_folder(path, mode=0o700)
    return path


def _make_folder(path: Path, *, mode: int = 0o777) -> None:
    """mkdir -p, its failure (read-only, permission denied, a file in the way) a WorkspaceError:
    the host's fault, for a person to fix, not the task's."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as exc:
        raise WorkspaceError(
            f"cannot make the folder {path}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else "")
            + "; check VIBE_WORKTREES_DIR and that the worker may write there"
        ) from None


@contextlib.contextmanager
def _locked(directory: Path, name: str = ".lock") -> Iterator[None]:
    _make_folder(directory)
    try:
        fh = open(directory / name, "w")  # noqa: SIM115 - closed below, after the error check
    except OSError as exc:
        raise WorkspaceError(f"cannot write the lock {directory / name}: {exc.strerror}") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@functools.cache
def instance_id() -> str:
    """This factory database's id (made once, kept in the database), cached per process."""
    return Instance.current()


def work_root(task: Task) -> Task:
    """The builder task whose worktree this task uses (reviews use their parent's)."""
    root = task
    seen = {root.pk}
    while root.stage and root.parent_id and root.parent_id not in seen:
        parent = root.parent
        assert parent is not None  # parent_id is set
        root = parent
        seen.add(root.pk)
    return root


def _slug(text: str) -> str:
    first = (text.strip().splitlines() or [""])[0]
    ascii_text = unicodedata.normalize("NFKD", first).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:40].rstrip("-") or "work"


def branch_name(task: Task, instance: str | None = None) -> str:
    """One branch per piece of work, in this instance's namespace, named from its goal.

    A branch the task already recorded wins, so editing the goal never loses the branch.
    """
    instance = instance or instance_id()
    prefix = f"vibe/{instance}/task-{task.pk}-"
    if task.branch.startswith(prefix):
        return task.branch
    return prefix + _slug(task.goal)


def worktree_path(task_id: int, instance: str | None = None) -> Path:
    return worktrees_dir() / f"{instance or instance_id()}-task-{task_id}"


def git_remote(root: Path) -> str:
    """The shared remote: VIBE_GIT_REMOTE, or "origin" when unset and the repository has it."""
    configured = getattr(settings, "VIBE_GIT_REMOTE", None)
    names = _git(root, "remote").split()
    if configured is None:
        return "origin" if "origin" in names else ""
    if configured and configured not in names:
        raise WorkspaceError(
            f"VIBE_GIT_REMOTE={configured} is not a remote of {root} "
            f"(it has: {', '.join(names) or 'none'}); add it or change the setting"
        )
    return configured


def base_branch(root: Path, remote: str) -> str:
    """VIBE_BASE_BRANCH, else the remote's default branch, else the checked-out one."""
    configured = getattr(settings, "VIBE_BASE_BRANCH", "")
    if configured:
        return configured
    if not remote:
        done = _run_git(root, "symbolic-ref", "--quiet", "--short", "HEAD")
        return done.stdout.decode().strip() if done.returncode == 0 else ""
    done = _run_git(root, "symbolic-ref", "--quiet", f"refs/remotes/{remote}/HEAD")
    if done.returncode == 0:
        return done.stdout.decode().strip().removeprefix(f"refs/remotes/{remote}/")
    for name in ("main", "master"):
        if _rev(root, f"refs/remotes/{remote}/{name}"):
            return name
    # Never fetched: ask the remote which branch its HEAD is.
    out = _remote_git(root, "ls-remote", "--symref", remote, "HEAD")
    for line in out.splitlines():
        if line.startswith("ref: refs/heads/"):
            return line.removeprefix("ref: refs/heads/").split("\t")[0]
    raise WorkspaceError(
        f"cannot tell the base branch of {remote} (it has no HEAD, main or master); "
        "set VIBE_BASE_BRANCH"
    )


def fetch(root: Path, remote: str, base: str, branches: str) -> None:
    """One fetch: the base branch and the task's branch (`branches`; a pattern with `*` may
    match none)."""
    _remote_git(
        root,
        "fetch",
        "--quiet",
        "--no-tags",
        remote,
        f"+refs/heads/{base}:refs/remotes/{remote}/{base}",
        f"+refs/heads/{branches}:refs/remotes/{remote}/{branches}",
    )


def _marker(instance: str, task_id: int) -> str:
    return f"{instance}:{task_id}"


def _made_here(root: Path, branch: str) -> str:
    """Which instance and task made the local `branch` ("" for one the factory did not make)."""
    done = _run_git(root, "config", "--get", f"branch.{branch}.vibetask")
    return done.stdout.decode().strip() if done.returncode == 0 else ""


def _catch_up(ws: Workspace, *, is_builder: bool) -> None:
    """Bring an existing worktree to the remote branch's head before the next run."""
    if not (ws.remote and ws.remote_head):
        return
    local = ws.head()
    if local == ws.remote_head:
        return
    remote_branch = f"{ws.remote}/{ws.branch}"
    if _is_ancestor(ws.path, local, ws.remote_head):
        _git(ws.path, "merge", "--quiet", "--ff-only", ws.remote_head)
        return
    ahead = _count(ws.path, local, f"^{ws.remote_head}")
    if is_builder and _is_ancestor(ws.path, ws.remote_head, local):
        # The last run's push failed (the run failed with it): push before building on it.
        ws.push()
        return
    behind = _count(ws.path, ws.remote_head, f"^{local}")
    detail = f" and {remote_branch} has {behind} it does not" if behind else ""
    raise WorkspaceError(
        f"the local branch {ws.branch} in {ws.path} has {ahead} commit(s) {remote_branch} does "
        f"not have{detail}; refusing to run on a head other hosts cannot see. Push or drop them "
        "(git reset --hard), then retry"
    )


def _start_point(root: Path, remote: str, base: str) -> str:
    ref = f"refs/remotes/{remote}/{base}" if remote else (f"refs/heads/{base}" if base else "HEAD")
    start = _rev(root, ref)
    if not start:
        where = f"{remote}/{base}" if remote else (base or "HEAD")
        raise WorkspaceError(
            f"the base branch {where} does not exist in {root}; set VIBE_BASE_BRANCH"
        )
    return start


def _add_worktree(
    root: Path, path: Path, branch: str, owner: Task, ws: Workspace, base: str
) -> str:
    """Make the worktree; returns the base commit when this made the branch ("" otherwise)."""
    instance = instance_id()
    local = _rev(root, f"refs/heads/{branch}")
    if local:
        made_by = _made_here(root, branch)
        if made_by != _marker(instance, owner.pk):
            raise WorkspaceError(
                f"branch {branch} already exists in {root} but was not made by this factory "
                f"(instance {instance}) for task {owner.pk}"
                + (f" (it was made for {made_by})" if made_by else "")
                + "; refusing to build on commits it did not make. Delete or rename the branch, "
                "then retry"
            )
        if ws.remote_head and local != ws.remote_head:
            if not _is_ancestor(root, local, ws.remote_head):
                ahead = _count(root, local, f"^{ws.remote_head}")
                raise WorkspaceError(
                    f"the local branch {branch} has {ahead} commit(s) {ws.remote}/{branch} does "
                    "not have; refusing to run on a head other hosts cannot see. Push or delete "
                    "it, then retry"
                )
            _git(root, "branch", "--quiet", "--force", branch, ws.remote_head)
        _git(root, "worktree", "add", "--quiet", str(path), branch)
        return ""
    if ws.remote_head:  # built on another host (or this one's worktree was cleaned)
        _git(root, "worktree", "add", "--quiet", "-b", branch, str(path), ws.remote_head)
        _git(root, "branch", "--quiet", f"--set-upstream-to={ws.remote}/{branch}", branch)
        made = ""
    else:
        made = _start_point(root, ws.remote, base)
        _git(root, "worktree", "add", "--quiet", "--no-track", "-b", branch, str(path), made)
    _git(root, "config", f"branch.{branch}.vibetask", _marker(instance, owner.pk))
    return made


def _known_base(root: Path, owner: Task, ws: Workspace, base: str) -> str:
    """The base of a branch this worktree did not start: as the builder recorded it, or derived."""
    result = owner.result if isinstance(owner.result, dict) else {}
    recorded = str(result.get("base_commit") or "")
    if recorded and _rev(root, recorded):
        return _rev(root, recorded)
    start = _rev(root, f"refs/remotes/{ws.remote}/{base}") if ws.remote else ""
    start = start or _rev(root, f"refs/heads/{base}" if base else "HEAD") or "HEAD"
    return _git(ws.path, "merge-base", "HEAD", start).strip()


def _plain_workspace(root: Path | None, task: Task) -> Workspace:
    """A scratch folder of the piece of work's own, or the plain VIBE_WORKSPACE folder."""
    if root is None:
        path = scratch_dir() / f"task-{work_root(task).pk}"
        _make_folder(path)
        return Workspace(path)
    if not root.is_dir():
        raise WorkspaceError(f"VIBE_WORKSPACE={root} is not a directory")
    return Workspace(root)


def _new_worktree(root: Path, owner: Task, ws: Workspace, base: str, *, setup: str) -> str:
    """Make the worktree afresh, over whatever a crash left; returns what `_add_worktree` did.

    With a setup to run, its marker goes down first, so a crash during it is seen next time.
    """
    path = ws.path
    if (path / ".git").exists():
        _discard(root, path)  # its setup never finished: a worker died in it
    elif path.exists():
        shutil.rmtree(path)  # a half-made worktree from a crash
    _git(root, "worktree", "prune")
    unfinished = path.with_name(path.name + ".setup")
    if setup:
        unfinished.write_text(setup + "\n")
    else:
        unfinished.unlink(missing_ok=True)
    made = _add_worktree(root, path, ws.branch, owner, ws, base)
    path.with_name(path.name + ".base").write_text(made or _known_base(root, owner, ws, base))
    return made


def prepare(task: Task, *, stop: threading.Event | None = None) -> Workspace:
    """Create or reuse the directory the agent for `task` runs in.

    A worktree this makes gets VIBE_WORKTREE_SETUP run in it (`ws.setup`); when that fails the
    worktree is removed again and SetupError says why. `stop` ends a setup still running: the
    worker lost the claim, or is stopping.
    """
    root = workspace_root()
    if root is None or not root.is_dir() or not is_git_repository(root):
        return _plain_workspace(root, task)
    owner = work_root(task)
    instance = instance_id()
    branch = branch_name(owner, instance)
    trees = worktrees_dir()
    path = worktree_path(owner.pk, instance)
    base_file = path.with_name(path.name + ".base")
    unfinished = path.with_name(path.name + ".setup")  # there until its setup has finished
    command = setup_command(path)
    made = None  # what _add_worktree returned, when this made the worktree
    # One preparation of this worktree at a time: its setup runs outside the repository-wide
    # lock (for minutes, maybe), and a worker that has lost the claim may still be in it.
    with _locked(trees, f"{path.name}.lock"):
        with _locked(trees):
            remote = git_remote(root)
            base = base_branch(root, remote)
            if remote:
                fetch(root, remote, base, f"vibe/{instance}/task-{owner.pk}-*")
            remote_head = _rev(root, f"refs/remotes/{remote}/{branch}") if remote else ""
            ws = Workspace(
                path,
                branch=branch,
                is_git=True,
                remote=remote,
                remote_head=remote_head,
                base_branch=base,
            )
            if (path / ".git").exists() and not unfinished.exists():
                _catch_up(ws, is_builder=owner.pk == task.pk)
            else:
                made = _new_worktree(root, owner, ws, base, setup=command)
            ws.base_commit = base_file.read_text().strip() if base_file.exists() else ""
            if not ws.base_commit:
                ws.base_commit = _known_base(root, owner, ws, base)
                base_file.write_text(ws.base_commit)
        if made is not None and command:
            ws.setup = _set_up(root, ws, command, made=made, unfinished=unfinished, stop=stop)
    return ws


def _set_up(
    root: Path,
    ws: Workspace,
    command: str,
    *,
    made: str,
    unfinished: Path,
    stop: threading.Event | None,
) -> Setup:
    """Run the setup in the worktree just made; when it fails, remove the worktree again."""
    setup = run_setup(command, ws.path, stop)
    if setup.ok:
        unfinished.unlink(missing_ok=True)
        return setup
    with _locked(worktrees_dir()):
        _discard(root, ws.path)
        if made and _rev(root, f"refs/heads/{ws.branch}") == made:
            # The branch this made holds nothing yet: the retry starts from the fetched base.
            _run_git(root, "branch", "--quiet", "-D", ws.branch)
        ws.path.with_name(ws.path.name + ".base").unlink(missing_ok=True)
        unfinished.unlink(missing_ok=True)
    raise SetupError(setup, ws.path)


def _discard(root: Path, path: Path) -> None:
    """Remove a worktree whose setup did not finish: no agent ran in it, so nothing is lost."""
    if _run_git(root, "worktree", "remove", "--force", "--force", str(path)).returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
    _git(root, "worktree", "prune")
