"""Start real `runworker` processes against the test database."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import AGENTS_DIR, REPO_ROOT


def agent_command(name: str) -> str:
    return shlex.join([sys.executable, str(AGENTS_DIR / name)])


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

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env = env
        self.tmp_path = tmp_path
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
        argv = [
            sys.executable,
            str(REPO_ROOT / "manage.py"),
            "runworker",
            worker_id,
            "--lane",
            lane,
            "--capacity",
            str(capacity),
            "--agent-command",
            agent_command(agent),
            *flags,
        ]
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

    def run(self, worker_id: str, lane: str, agent: str = "ok_agent.py", *flags, **kw) -> str:
        """Run a worker with --once to completion; returns its output."""
        worker = self.start(worker_id, lane, agent, "--once", *flags, **kw)
        code = worker.wait(120)
        assert code == 0, worker.output()
        return worker.output()

    def stop_all(self) -> None:
        for worker in self.procs:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(10)


@pytest.fixture
def fleet(subprocess_env, tmp_path):
    env = {
        **subprocess_env,
        "VIBE_RETRY_BASE_SECONDS": "0",
        "VIBE_LOG_LEVEL": "INFO",
        # The test agents' own knobs reach them through the agents' environment allowlist.
        "VIBE_AGENT_ENV": "TEST_*",
    }
    fleet = Fleet(env, tmp_path)
    yield fleet
    fleet.stop_all()


def wait_for(condition: Callable[[], object], timeout: float = 30, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")
