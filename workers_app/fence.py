"""The lease fence: runs one agent, and kills it with all it started when its claim may be gone.

    python -I fence.py LEASE_FILE WORKER_PID -- PROGRAM ARGS…

A worker that cannot renew a task's lease (its database is down) or that cannot run at all
(SIGSTOP, a hung host process) must not leave its agent editing the worktree beside the task's
next attempt. Such a worker cannot stop its own agent, so this small process, the leader of the
agent's process group, does: LEASE_FILE holds a deadline (CLOCK_MONOTONIC seconds) that the
worker's watchdog thread pushes forward while the worker runs and its lease is renewed; once the
deadline passes, the fence writes LEASE_FILE.fenced (so the worker records the run as
`lease_lost`, not as the agent's failure) and SIGKILLs the whole group, itself included. The
worker keeps the deadline short of the lease's end, so the agent is dead before any other worker
may take the task. When the worker dies, the fence kills the group at once too.

Standard library only, no Django: it starts in a few milliseconds. It passes the agent's exit
status on unchanged (a signal death as the same signal), ignores SIGTERM/SIGINT/SIGHUP (the
worker signals the whole group; the agent decides, the fence waits for it) and writes nothing to
the agent's output.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
WORKER_GONE = signal.SIGUSR2  # what the kernel sends the fence when its worker dies (Linux)
CHECK_SECONDS = 1.0  # the deadline and the worker are looked at at least this often


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def read_deadline(path: str) -> float:
    """The deadline in the lease file; an unreadable one has passed (fail safe)."""
    try:
        with open(path, encoding="ascii") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def _stop_group(marker: str | None = None) -> None:
    if marker is not None:
        with contextlib.suppress(OSError):
            open(marker, "w").close()  # noqa: SIM115 - an empty marker, closed at once
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the fence too: it has nothing left to do


def _ignore(signum: int, frame: object) -> None:
    pass  # a handler, not SIG_IGN: the agent must get the default back when it execs


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: fence.py LEASE_FILE WORKER_PID -- PROGRAM ARGS…\n")
        return 2
    lease_file, worker_pid, command = argv[0], int(argv[1]), argv[3:]
    libc = _follow_worker(worker_pid)
    die_with_fence = (lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)) if libc else None
    try:
        agent = subprocess.Popen(command, preexec_fn=die_with_fence)  # noqa: PLW1509
    except OSError as exc:
        sys.stderr.write(f"{command[0]}: {exc.strerror or exc}\n")
        return 126 if isinstance(exc, PermissionError) else 127
    _watch(agent, lease_file, worker_pid)
    return _exit_like(agent.returncode)


def _follow_worker(worker_pid: int) -> ctypes.CDLL | None:
    """Ignore the group's signals and ask to be told when the worker dies; returns libc."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _ignore)
    signal.signal(WORKER_GONE, lambda signum, frame: _stop_group())
    libc = _libc()
    if libc is not None:
        # The worker asked for SIGKILL, which would leave the agent's own children running:
        # a signal we can catch instead, to take the whole group down.
        libc.prctl(PR_SET_PDEATHSIG, WORKER_GONE)
    if os.getppid() != worker_pid:
        _stop_group()  # the worker died before we could ask to be told
    return libc


def _watch(agent: subprocess.Popen[bytes], lease_file: str, worker_pid: int) -> None:
    """Wait for the agent, stopping the group once the deadline passes or the worker is gone."""
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(agent.pid)  # readable when the agent exits: no polling
    while agent.poll() is None:
        remaining = read_deadline(lease_file) - time.monotonic()
        if remaining <= 0:
            _stop_group(f"{lease_file}.fenced")
        if os.getppid() != worker_pid:
            _stop_group()
        timeout = min(remaining, CHECK_SECONDS)
        if pidfd is not None:
            select.select([pidfd], [], [], timeout)
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(timeout)


def _exit_like(code: int) -> int:
    if code < 0:  # died of a signal: so does the fence, for the worker to see the same status
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
