"""The lease fence (workers_app/fence.py) as a real process: it passes the agent through, and
kills the agent's whole process group when its deadline passes or its worker dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.waiting import wait_for
from workers_app.leases import FENCE_SCRIPT


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def set_deadline(path: Path, seconds_from_now: float) -> None:
    """Written whole, as the worker does: the fence never reads half a file."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(f"{time.monotonic() + seconds_from_now:.3f}\n")
    os.replace(partial, path)


def fenced(lease: Path, *command: str, **kw) -> subprocess.Popen:
    argv = [sys.executable, "-I", str(FENCE_SCRIPT), str(lease), str(os.getpid()), "--", *command]
    return subprocess.Popen(argv, start_new_session=True, **kw)


def test_the_agent_runs_through_the_fence_unchanged(tmp_path):
    lease = tmp_path / "lease"
    set_deadline(lease, 60)
    agent = fenced(
        lease,
        "sh",
        "-c",
        'read line; echo "got $line"; echo oops >&2; exit 3',
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = agent.communicate(b"the prompt\n", timeout=10)
    assert (agent.returncode, out, err) == (3, b"got the prompt\n", b"oops\n")
    # A signal death is the same signal: the worker tells a time limit from a crash.
    killed = fenced(lease, "sh", "-c", "kill -TERM $$")
    assert killed.wait(10) == -signal.SIGTERM
    missing = fenced(lease, str(tmp_path / "no-such-agent"), stderr=subprocess.PIPE)
    assert missing.wait(10) == 127 and b"no-such-agent" in missing.stderr.read()
    assert not Path(f"{lease}.fenced").exists()


def test_sigterm_to_the_group_is_the_agents_to_answer(tmp_path):
    lease = tmp_path / "lease"
    set_deadline(lease, 60)
    agent = fenced(
        lease, "sh", "-c", "trap 'echo bye; exit 143' TERM; sleep 30 & wait", stdout=subprocess.PIPE
    )
    time.sleep(0.5)
    os.killpg(agent.pid, signal.SIGTERM)  # what the worker sends at a time limit or a drain
    assert agent.wait(10) == 143
    assert agent.stdout.read() == b"bye\n"


def test_a_passed_deadline_kills_the_whole_group(tmp_path):
    lease = tmp_path / "lease"
    pids = tmp_path / "pids"
    set_deadline(lease, 1.0)
    started = time.monotonic()
    agent = fenced(lease, "sh", "-c", f"sleep 60 & echo $! > {pids}; sleep 60")
    assert agent.wait(10) == -signal.SIGKILL
    assert 0.9 < time.monotonic() - started < 3
    assert Path(f"{lease}.fenced").exists()  # the worker reads the run as lease_lost
    background = int(pids.read_text())
    wait_for(lambda: not alive(background), timeout=5, what="the agent's own child")


def test_a_deadline_moved_on_in_time_lets_the_agent_finish(tmp_path):
    lease = tmp_path / "lease"
    set_deadline(lease, 1.0)
    agent = fenced(lease, "sh", "-c", "sleep 2.5; exit 0")
    for _ in range(5):
        time.sleep(0.5)
        set_deadline(lease, 1.0)  # what the worker's watchdog does while its lease holds
    assert agent.wait(10) == 0
    assert not Path(f"{lease}.fenced").exists()


def test_a_missing_lease_file_is_a_passed_deadline(tmp_path):
    agent = fenced(tmp_path / "never-written", "sleep", "60")
    assert agent.wait(10) == -signal.SIGKILL


def test_the_group_dies_with_its_worker(tmp_path):
    lease = tmp_path / "lease"
    pids = tmp_path / "pids"
    set_deadline(lease, 600)
    # A stand-in worker: starts the fence in a group of its own, as AgentProcess does, then
    # is killed -9.
    worker_code = (
        "import os, subprocess, sys, time\n"
        f"argv = [sys.executable, '-I', {str(FENCE_SCRIPT)!r}, {str(lease)!r}, str(os.getpid()),"
        f" '--', 'sh', '-c', 'sleep 60 & echo $$ $! > {pids}; sleep 60']\n"
        "subprocess.Popen(argv, start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", worker_code])
    wait_for(lambda: pids.exists() and pids.read_text().strip(), timeout=10, what="the agent")
    agent, background = (int(pid) for pid in pids.read_text().split())
    worker.kill()
    worker.wait(10)
    wait_for(lambda: not alive(agent) and not alive(background), timeout=5, what="the group")
    assert not Path(f"{lease}.fenced").exists()
