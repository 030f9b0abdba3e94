"""Git, run so that it never prompts, with its failures typed: the workspace's one way to git.

Every command has a time limit and no terminal: a credential git would ask for is a typed
`remote_auth` failure, not a worker hung on a prompt nobody reads.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_TIMEOUT_SECONDS = 120


class WorkspaceError(RuntimeError):
    """The task's workspace could not be prepared; the message says why."""

    error_type = "workspace_error"


class RemoteError(WorkspaceError):
    """A fetch or push failed: remote_auth, push_rejected or remote_unreachable."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


# Git's own words for each failure, checked in this order: a refused push also says "failed to
# push", and a missing local path says "make sure you have the correct access rights".
_REMOTE_FAILURES = (
    (
        "push_rejected",
        (
            "[rejected]",
            "[remote rejected]",
            "non-fast-forward",
            "fetch first",
            "hook declined",
            "stale info",
            "failed to push some refs",
        ),
    ),
    (
        "remote_auth",
        (
            "authentication failed",
            "permission denied",
            "could not read username",
            "could not read password",
            "terminal prompts disabled",
            "invalid username or password",
            "access denied",
            "returned error: 401",
            "returned error: 403",
            "host key verification failed",
            "insufficient permission",
        ),
    ),
)


def remote_error_type(stderr: str) -> str:
    """remote_auth, push_rejected or (anything else: cannot resolve, connect, find) unreachable."""
    text = stderr.lower()
    if "does not appear to be a git repository" in text:
        return "remote_unreachable"
    for error_type, needles in _REMOTE_FAILURES:
        if any(needle in text for needle in needles):
            return error_type
    return "remote_unreachable"


def _git_env() -> dict[str, str]:
    """The worker's environment, with every way git could ask a person for a secret shut."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true"}
    env.update(SSH_ASKPASS="/bin/true", GCM_INTERACTIVE="never")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def _run_git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise WorkspaceError(
            "git is not installed, but VIBE_WORKSPACE is a git repository"
        ) from None


def _git(cwd: Path, *args: str) -> str:
    try:
        done = _run_git(cwd, *args)
    except subprocess.TimeoutExpired:
        raise WorkspaceError(f"git {' '.join(args)} took over {GIT_TIMEOUT_SECONDS}s") from None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {err}")
    return done.stdout.decode("utf-8", "replace")


def _remote_git(cwd: Path, *args: str) -> str:
    """A git command that talks to the remote; its failure is a typed RemoteError."""
    try:
        done = _run_git(cwd, *args)
    except subprocess.TimeoutExpired:
        raise RemoteError(
            "remote_unreachable", f"git {' '.join(args)} took over {GIT_TIMEOUT_SECONDS}s"
        ) from None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise RemoteError(remote_error_type(err), f"git {' '.join(args)} failed: {err}")
    return done.stdout.decode("utf-8", "replace")


def _rev(cwd: Path, ref: str) -> str:
    """The commit `ref` names, or "" when there is no such ref."""
    done = _run_git(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return done.stdout.decode().strip() if done.returncode == 0 else ""


def _is_ancestor(cwd: Path, older: str, newer: str) -> bool:
    return _run_git(cwd, "merge-base", "--is-ancestor", older, newer).returncode == 0


def _count(cwd: Path, *revs: str) -> int:
    return int(_git(cwd, "rev-list", "--count", *revs).strip() or 0)


def is_git_repository(path: Path) -> bool:
    """Worktrees only make sense inside git; any other folder is used as it is."""
    try:
        return _git(path, "rev-parse", "--is-inside-work-tree").strip() == "true"
    except WorkspaceError:
        return False
