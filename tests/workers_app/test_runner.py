"""The agent runner: argv without a shell, bounded clean tails, time limits, process groups."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.conftest import AGENTS_DIR
from workers_app.runner import AgentProcess, RunResult


def agent(name: str) -> list[str]:
    return [sys.executable, str(AGENTS_DIR / name)]


def run_agent(argv: list[str], **options) -> RunResult:
    """An agent run to completion, as the worker loop's polling would see it end."""
    process = AgentProcess(argv, **options).start()
    process.wait()
    return process.result()


def test_ok_agent_gets_prompt_on_stdin_and_exits_zero():
    result = run_agent(agent("ok_agent.py"), stdin_data=b"Build the thing\nmore", timeout=30)
    assert result.exit_code == 0
    assert not result.timed_out
    assert "ok agent received: Build the thing" in result.stdout


def test_failing_agent_keeps_its_stderr():
    result = run_agent(agent("fail_agent.py"), stdin_data=b"", timeout=30)
    assert result.exit_code == 3
    assert "deliberate test failure" in result.stderr


def test_noisy_output_is_bounded_decoded_and_free_of_nul_bytes():
    result = run_agent(agent("noisy_agent.py"), stdin_data=b"x", timeout=30, tail_bytes=4096)
    assert result.exit_code == 0
    assert "\x00" not in result.stdout
    assert "\ufffd" in result.stdout  # invalid UTF-8 became replacement characters
    assert result.stdout.rstrip().endswith("noisy agent: done")
    assert "earlier bytes not kept" in result.stdout
    assert len(result.stdout) < 4096 + 100


def test_large_prompt_does_not_deadlock_on_a_full_pipe():
    prompt = b"first line\n" + b"y" * (4 * 1024 * 1024)
    result = run_agent(agent("ok_agent.py"), stdin_data=prompt, timeout=30)
    assert result.exit_code == 0
    assert "first line" in result.stdout


def test_time_limit_stops_the_whole_process_group(tmp_path):
    # The agent starts a grandchild; both must be gone after the time limit.
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    result = run_agent([sys.executable, "-c", script], timeout=1.0)
    assert result.timed_out
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the agent's child outlived the time limit")


def test_sigterm_reaches_the_agent_and_is_reported():
    env = {**os.environ, "TEST_SLEEP": "30"}
    process = AgentProcess(agent("sleep_agent.py"), env=env, stdin_data=b"").start()
    time.sleep(0.5)
    process.stop()
    assert process.wait(10)
    result = process.result()
    assert result.exit_code == 143
    assert result.killed
    assert "got SIGTERM" in result.stdout


def test_missing_command_raises_file_not_found():
    with pytest.raises(FileNotFoundError):
        AgentProcess(["definitely-not-an-agent-xyz"]).start()


def test_live_tail_is_readable_while_running():
    env = {**os.environ, "TEST_SLEEP": "2"}
    process = AgentProcess(agent("sleep_agent.py"), env=env, stdin_data=b"").start()
    deadline = time.monotonic() + 10
    while "tick 2" not in process.stdout.text() and time.monotonic() < deadline:
        assert not process.poll()
        time.sleep(0.05)
    assert "tick 2" in process.stdout.text()
    process.wait(10)
    assert "done" in process.result().stdout
