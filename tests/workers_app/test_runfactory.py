"""`runfactory` (what `make run` starts): web server plus the pool, all stopped by one Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from django.core.management import call_command

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task
from tests.conftest import REPO_ROOT
from tests.waiting import wait_for
from workers_app.models import Worker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.slow
def test_runfactory_serves_works_and_stops_cleanly_on_ctrl_c(subprocess_env, tmp_path):
    Worker.objects.all().delete()  # the migration's default pool, when this test runs first
    Worker.objects.create(worker_id="@backend-1", lane="backend", capacity_limit=2, managed=True)
    Worker.objects.create(worker_id="@security-1", lane="security", capacity_limit=2, managed=True)
    # A row a one-off `runworker` left behind: not the configured pool, so never started here.
    Worker.objects.create(worker_id="@one-off-1", lane="backend", capacity_limit=2)
    port = free_port()
    env = {**subprocess_env, "VIBE_SIM_SLEEP": "0", "VIBE_SIM_OUTCOME": "pass"}
    log = tmp_path / "factory.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "manage.py"), "runfactory", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/admin/login/") == 200, 30, "web")
        task = lifecycle.submit("Say hello", lane="backend", actor="cli", pipeline="none")
        wait_for(
            lambda: Task.objects.get(pk=task.pk).status == Status.COMPLETED, 30, "simulated run"
        )
        pids = wait_for(
            lambda: [p for p in Worker.objects.values_list("pid", flat=True) if p], 10, "pids"
        )
        assert len(pids) == 2  # the one-off row got no process
        proc.send_signal(signal.SIGINT)
        assert proc.wait(40) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert f"http://localhost:{port}/" in output
    assert "SIMULATED agent" in output
    assert "not started (one-off runworker rows, not in the pool): @one-off-1" in output
    assert "Vibe Factory stopped." in output
    assert not any(alive(pid) for pid in pids)
    assert http_status(f"http://127.0.0.1:{port}/admin/login/") == 0
    assert set(Worker.objects.filter(managed=True).values_list("status", flat=True)) == {"offline"}
    assert Worker.objects.get(pk="@one-off-1").pid is None


@pytest.mark.django_db
def test_cleanworktrees_removes_folders_of_finished_work_only(tmp_path, settings, capsys):
    settings.VAR_DIR = tmp_path
    settings.VIBE_WORKTREES_DIR = str(tmp_path / "trees")
    settings.VIBE_WORKSPACE = ""
    scratch = tmp_path / "trees-scratch"  # beside the worktrees, outside the var folder
    open_task = lifecycle.submit("Still open", lane="backend", actor="cli")
    (scratch / "task-999999").mkdir(parents=True)
    (scratch / f"task-{open_task.pk}").mkdir()
    call_command("cleanworktrees", "--dry-run")
    out = capsys.readouterr().out
    assert "task-999999: would remove: task is gone" in out
    assert "would remove 1 of 2 workspace folder(s)" in out
    assert (scratch / "task-999999").exists()
    call_command("cleanworktrees")
    assert "removed 1 of 2" in capsys.readouterr().out
    assert not (scratch / "task-999999").exists()
    assert (scratch / f"task-{open_task.pk}").exists()
