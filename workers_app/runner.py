"""Run one agent subprocess like a build step: argv (never a shell), own process group, time limit.

Output is read by two small threads into bounded byte buffers, so a chatty agent never blocks on
a full pipe and never fills the worker's memory; the tails are decoded with replacement and
stripped of NUL bytes (PostgreSQL text refuses them). `AgentProcess` never blocks: the worker's
main loop polls it, renews leases in between and writes the live tail to the task's Run row.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)
TAIL_BYTES = 64 * 1024
MAX_LINE_BYTES = 4 * 1024 * 1024  # a longer line is cut (stream-json events can be large)
KILL_GRACE_SECONDS = 3.0
_PR_SET_PDEATHSIG = 1


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _die_with_worker() -> None:
    """In the child before exec: if the worker is killed (even -9), the agent gets SIGKILL.

    Otherwise an orphaned agent would keep editing the worktree while the task's next attempt
    runs there too.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def clean_text(data: bytes) -> str:
    """Agents print anything; keep it readable and storable (PostgreSQL refuses NUL)."""
    return data.decode("utf-8", errors="replace").replace("\x00", "")


class _TailBuffer:
    """The last `limit` bytes written, plus the total seen."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0
        self.lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self.lock:
            self.total += len(chunk)
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        with self.lock:
            data = bytes(self.data)
            cut = self.total > len(data)
        text = clean_text(data)
        return f"[… {self.total - len(data)} earlier bytes not kept …]\n{text}" if cut else text


LineHandler = Callable[[str], None]


class _Lines:
    """Splits a stream into text lines for a handler; a line past MAX_LINE_BYTES is cut."""

    def __init__(self, handler: LineHandler) -> None:
        self.handler = handler
        self.pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        while (end := self.pending.find(b"\n")) >= 0:
            line = bytes(self.pending[:end])
            del self.pending[: end + 1]
            self._emit(line)
        if len(self.pending) > MAX_LINE_BYTES:
            self._emit(bytes(self.pending))
            self.pending.clear()

    def close(self) -> None:
        if self.pending:
            self._emit(bytes(self.pending))
            self.pending.clear()

    def _emit(self, line: bytes) -> None:
        try:
            self.handler(clean_text(line[:MAX_LINE_BYTES]).rstrip("\r"))
        except Exception:  # a reader's bug must not stop the pipe being drained
            logger.exception("agent output reader failed on a line")


@dataclass
class RunResult:
    exit_code: int | None
    timed_out: bool
    duration: float
    stdout: str
    stderr: str
    killed: bool = False


class AgentProcess:
    """One running agent. `start` raises FileNotFoundError/PermissionError when it cannot run."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin_data: bytes | None = None,
        timeout: float | None = None,
        tail_bytes: int = TAIL_BYTES,
        on_stdout: LineHandler | None = None,
        on_stderr: LineHandler | None = None,
    ) -> None:
        self.argv = list(argv)
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.stdin_data = stdin_data
        self.timeout = timeout
        self.stdout = _TailBuffer(tail_bytes)
        self.stderr = _TailBuffer(tail_bytes)
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.ended: float | None = None
        self.timed_out = False
        self.killed = False
        self._threads: list[threading.Thread] = []
        self._term_sent_at: float | None = None

    def start(self) -> AgentProcess:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE if self.stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: we can stop all it started
            close_fds=True,
            preexec_fn=_die_with_worker if _LIBC is not None else None,
        )
        for stream, buffer, handler in (
            (self.proc.stdout, self.stdout, self.on_stdout),
            (self.proc.stderr, self.stderr, self.on_stderr),
        ):
            self._spawn(self._pump, stream, buffer, _Lines(handler) if handler else None)
        if self.stdin_data is not None:
            self._spawn(self._feed_stdin, self.proc.stdin, self.stdin_data)
        return self

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _pump(stream, buffer: _TailBuffer, lines: _Lines | None) -> None:
        try:
            while chunk := stream.read1(65536):
                buffer.feed(chunk)
                if lines is not None:
                    lines.feed(chunk)
        except (OSError, ValueError):
            pass
        finally:
            if lines is not None:
                lines.close()
            stream.close()

    @staticmethod
    def _feed_stdin(stream, data: bytes) -> None:
        try:
            stream.write(data)
        except (BrokenPipeError, OSError, ValueError):
            pass  # the agent did not read its prompt; its exit status tells the rest
        finally:
            with contextlib.suppress(OSError):
                stream.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def poll(self) -> bool:
        """True once the agent has exited (enforcing the time limit on the way)."""
        assert self.proc is not None, "start() first"
        if self.proc.poll() is not None:
            if self.ended is None:
                self.ended = time.monotonic()
            return True
        if self.timeout and self.elapsed() > self.timeout and not self.timed_out:
            self.timed_out = True
            self.signal_group(signal.SIGTERM)
        self._escalate()
        return False

    def stop(self) -> None:
        """Ask the agent's whole process group to stop; SIGKILL follows after a grace period."""
        self.killed = True
        self.signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self.killed = True
        self.signal_group(signal.SIGKILL)

    def signal_group(self, signum: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            # The leader is gone, but children it left in the group may still run.
            if self.proc is not None and signum == signal.SIGKILL:
                self._killpg(signum)
            return
        if signum == signal.SIGTERM and self._term_sent_at is None:
            self._term_sent_at = time.monotonic()
        self._killpg(signum)

    def _killpg(self, signum: int) -> None:
        if self.proc is None:
            return  # not started: nothing to signal
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def _escalate(self) -> None:
        if self._term_sent_at and time.monotonic() - self._term_sent_at > KILL_GRACE_SECONDS:
            self._killpg(signal.SIGKILL)

    def wait(self, timeout: float | None = None, *, interval: float = 0.05) -> bool:
        """Poll until exit or `timeout`; True when it exited."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    def result(self) -> RunResult:
        """The outcome, once exited: waits briefly for the readers to drain the pipes."""
        assert self.proc is not None
        # Leftover children of the agent must not outlive its run (nor hold its pipes open).
        self._killpg(signal.SIGKILL)
        for thread in self._threads:
            thread.join(timeout=2.0)
        return RunResult(
            exit_code=self.proc.returncode,
            timed_out=self.timed_out,
            duration=self.elapsed(),
            stdout=self.stdout.text(),
            stderr=self.stderr.text(),
            killed=self.killed,
        )
