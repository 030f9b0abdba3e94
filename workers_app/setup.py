"""VIBE_WORKTREE_SETUP: the team's own command (say `uv sync` or `npm ci`), run once in each new
worktree before its first agent, like a build step: its own process group, a time limit, its
output kept for the run's transcript. `workspace.prepare` decides when it runs and removes a
worktree whose setup failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .git import WorkspaceError, _git_env
from .runner import clean_text

SETUP_TAIL_BYTES = 64 * 1024  # of a setup command's output, kept for the transcript
SETUP_ERROR_CHARS = 4000  # of that output, quoted in the task's error
SETUP_POLL_SECONDS = 0.2  # how often a running setup checks its time limit and stop flag


@dataclass
class Setup:
    """What VIBE_WORKTREE_SETUP did in a new worktree, for the run's transcript."""

    command: str
    exit_code: int | None
    seconds: float
    output: str  # stdout and stderr as they came, the tail when long
    timed_out: bool = False
    stopped: bool = False  # the worker lost the claim, or is stopping

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.stopped)

    def describe(self) -> str:
        if self.stopped:
            how = "was stopped: the worker let go of the task"
        elif self.timed_out:
            how = f"took over {settings.VIBE_WORKTREE_SETUP_TIMEOUT}s and was stopped"
        else:
            how = f"exited {self.exit_code}"
        return f"VIBE_WORKTREE_SETUP ({self.command}) {how} after {self.seconds:.1f}s"


class SetupError(WorkspaceError):
    """VIBE_WORKTREE_SETUP failed in a new worktree, which was removed again."""

    def __init__(self, setup: Setup, path: Path) -> None:
        message = (
            f"{setup.describe()} in {path}; the worktree was removed, so the next attempt sets "
            "up a new one"
        )
        if setup.output.strip():
            message += f". The last of its output:\n{setup.output[-SETUP_ERROR_CHARS:]}"
        super().__init__(message)
        self.setup = setup


def setup_command(path: Path) -> str:
    """VIBE_WORKTREE_SETUP; refused for a worktree inside the factory's var folder."""
    command = getattr(settings, "VIBE_WORKTREE_SETUP", "")
    var = Path(settings.VAR_DIR).resolve()
    if command and path.resolve().is_relative_to(var):
        raise WorkspaceError(
            f"the worktree {path} is inside the factory's var folder {var}, where "
            "VIBE_WORKTREE_SETUP is never run; set VIBE_WORKTREES_DIR outside it"
        )
    return command


def run_setup(command: str, cwd: Path, stop: threading.Event | None) -> Setup:
    """`sh -c command` in `cwd`, like a build step: its own process group, stdin /dev/null, a time
    limit, stdout and stderr together with the tail kept.

    It is the team's own command, not an agent: it gets the worker's environment (with git's
    prompts shut, as for every git command here) and the worker's HOME, so package caches are
    shared between worktrees.
    """
    if stop is not None and stop.is_set():
        return Setup(command, None, 0.0, "", stopped=True)
    limit = settings.VIBE_WORKTREE_SETUP_TIMEOUT
    started = time.monotonic()
    timed_out = stopped = False
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=cwd,
                env=_git_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise WorkspaceError(f"could not run VIBE_WORKTREE_SETUP in {cwd}: {exc}") from None
        try:
            while True:
                try:
                    proc.wait(SETUP_POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    stopped = stop is not None and stop.is_set()
                    timed_out = time.monotonic() - started > limit
                    if stopped or timed_out:
                        break
        finally:
            # What it started goes with it, also after a clean exit: nothing of the setup may
            # still be writing in the worktree when the agent starts.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        seconds = time.monotonic() - started
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - SETUP_TAIL_BYTES))
        output = clean_text(out.read())
    if size > SETUP_TAIL_BYTES:
        output = f"[… {size - SETUP_TAIL_BYTES} earlier bytes not kept …]\n{output}"
    exit_code = None if stopped or timed_out else proc.returncode
    return Setup(command, exit_code, seconds, output, timed_out=timed_out, stopped=stopped)
