"""Run `runworker` against the test database: in this process (`Fleet.run`, for a worker that
runs `--once` to the end) or as real processes (`Fleet.start`, for signals, exit codes, races)."""

from __future__ import annotations

import io
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.conftest import AGENTS_DIR, REPO_ROOT


def agent_command(name: str) -> str:
    return shlex.join([sys.executable, str(AGENTS_DIR / name)])


def worker_args(worker_id: str, lane: str, agent: str, capacity: int, *flags: str) -> list[str]:
    """`runworker`'s arguments for one of the test agents."""
    args = [worker_id, "--lane", lane, "--capacity", str(capacity)]
    return [*args, "--agent-command", agent_command(agent), *flags]


@dataclass
class WorkerProcess:
    worker_id: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.worker_id} did not exit:\n{self.output()}") from None


class Fleet:
    """Worker processes of one test; all are killed at teardown if still running."""

    def __init__(self, env: dict[str, str], tmp_path: Path, settings, monkeypatch) -> None:
        self.env = env
        self.tmp_path = tmp_path
        self.settings = settings
        self.monkeypatch = monkeypatch
        self.procs: list[WorkerProcess] = []

    def start(
        self,
        worker_id: str,
        lane: str,
        agent: str = "ok_agent.py",
        *flags: str,
        capacity: int = 1,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        argv = [sys.executable, str(REPO_ROOT / "manage.py"), "runworker"]
        argv += worker_args(worker_id, lane, agent, capacity, *flags)
        log = self.tmp_path / f"{worker_id.strip('@')}-{len(self.procs)}.log"
        return self._spawn(worker_id, argv, log, env)

    def _spawn(
        self, worker_id: str, argv: list[str], log: Path, env: dict[str, str] | None
    ) -> WorkerProcess:
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env={**self.env, **(env or {})},
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(worker_id, proc, log)
        self.procs.append(worker)
        return worker

    def start_plain(self, args: list[str], env: dict[str, str] | None = None) -> WorkerProcess:
        """`runworker ARGS` exactly as given (no default agent command)."""
        argv = [sys.executable, str(REPO_ROOT / "manage.py"), "runworker", *args]
        log = self.tmp_path / f"plain-{len(self.procs)}.log"
        return self._spawn(args[0], argv, log, env)

    def run(
        self,
        worker_id: str,
        lane: str,
        agent: str = "ok_agent.py",
        *flags: str,
        capacity: int = 1,
        env: dict[str, str] | None = None,
    ) -> str:
        """Run a worker with --once to completion in this process; returns what it printed."""
        return self.run_plain(worker_args(worker_id, lane, agent, capacity, "--once", *flags), env)

    def run_plain(self, args: list[str], env: dict[str, str] | None = None) -> str:
        """`runworker ARGS` exactly as given, in this process; it must end by itself.

        `env` holds what a real process would get in its environment: a name settings.py reads
        becomes that setting, the rest (the test agents' TEST_* knobs) the agents' environment."""
        for name, value in {**IN_PROCESS_SETTINGS, **(env or {})}.items():
            if hasattr(self.settings, name):
                setattr(self.settings, name, _as_setting(value, getattr(self.settings, name)))
            else:
                self.monkeypatch.setenv(name, value)
        out = io.StringIO()
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            call_command("runworker", *args, stdout=out)
        finally:
            for sig, handler in handlers.items():  # the loop's drain-on-signal is not pytest's
                signal.signal(sig, handler)
        return out.getvalue()

    def stop_all(self) -> None:
        for worker in self.procs:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(10)


def _as_setting(value: object, current: object) -> object:
    """An environment string as the type settings.py made of it (int, float), else as given."""
    if isinstance(value, str) and type(current) in (int, float):
        return type(current)(value)
    return value


# What the `fleet` fixture's environment gives real processes, as settings for `Fleet.run`.
IN_PROCESS_SETTINGS = {"VIBE_RETRY_BASE_SECONDS": 0.0, "VIBE_AGENT_ENV": ["TEST_*"]}


@pytest.fixture
def fleet(subprocess_env, tmp_path, settings, monkeypatch):
    env = {
        **subprocess_env,
        "VIBE_RETRY_BASE_SECONDS": "0",
        "VIBE_LOG_LEVEL": "INFO",
        # The test agents' own knobs reach them through the agents' environment allowlist.
        "VIBE_AGENT_ENV": "TEST_*",
    }
    fleet = Fleet(env, tmp_path, settings, monkeypatch)
    yield fleet
    fleet.stop_all()
