"""The `vibe` management command: text, --json and exit codes of every subcommand."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from chatops_app.models import ChatLink
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db
REPO_ROOT = Path(__file__).resolve().parents[2]


def vibe(*args: str) -> str:
    out = StringIO()
    call_command("vibe", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def vibe_json(*args: str) -> dict:
    return json.loads(vibe(*args, "--json"))


def dead_letter_task(goal: str = "Flaky migration") -> Task:
    task = lifecycle.submit(goal, lane="backend", actor="cli", max_attempts=1)
    claimed = lifecycle.claim_next("@backend-1")
    lifecycle.fail(
        claimed.pk,
        worker_id="@backend-1",
        token=claimed.claim_token,
        error_type="agent_exit",
        error="exit 1",
    )
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    return task


def test_submit_prints_the_new_task_id():
    out = vibe("submit", "Add a health endpoint", "--lane", "backend", "--priority", "80")
    task = Task.objects.get()
    assert out.strip() == str(task.pk)
    assert (task.goal, task.lane, task.priority, task.status) == (
        "Add a health endpoint",
        "backend",
        80,
        Status.PENDING,
    )
    assert task.history.get().actor == "cli"


def test_submit_json_and_high_risk_waits_for_approval():
    data = vibe_json("submit", "Rotate the prod keys", "--lane", "backend", "--risk", "high")
    task = Task.objects.get(pk=data["id"])
    assert data == {
        "ok": True,
        "id": task.pk,
        "status": Status.AWAITING_APPROVAL,
        "existing": False,
    }


def test_submit_with_prerequisites_and_unknown_prerequisite():
    first = lifecycle.submit("Schema", lane="backend", actor="cli")
    data = vibe_json("submit", "API on the schema", "--lane", "backend", "--after", str(first.pk))
    assert list(Task.objects.get(pk=data["id"]).depends_on.all()) == [first]
    with pytest.raises(CommandError, match="task 999 does not exist"):
        vibe("submit", "Orphan", "--lane", "backend", "--after", "999")
    assert Task.objects.count() == 2


def test_submit_without_lane_is_a_usage_error():
    with pytest.raises(CommandError) as excinfo:
        vibe("submit", "No lane")
    assert excinfo.value.returncode == 2
    assert not Task.objects.exists()


def test_submit_from_jsonl_file_all_or_nothing(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"goal": "one", "lane": "backend"}\n'
        "\n"
        '{"goal": "two", "lane": "qa", "priority": 90, "risk": "high"}\n'
    )
    data = vibe_json("submit", "--from-file", str(good))
    tasks = list(Task.objects.filter(pk__in=data["ids"]).order_by("pk"))
    assert [(t.goal, t.lane, t.status) for t in tasks] == [
        ("one", "backend", Status.PENDING),
        ("two", "qa", Status.AWAITING_APPROVAL),
    ]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"goal": "three", "lane": "backend"}\n{"goal": "four", "lane": "nope"}\n')
    with pytest.raises(CommandError, match=r"bad.jsonl: line 2: unknown lane 'nope'"):
        vibe("submit", "--from-file", str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"goal": "five", "lane": "backend"}\n{"goal": oops}\n')
    with pytest.raises(CommandError, match=r"line 2: not valid JSON"):
        vibe("submit", "--from-file", str(broken))
    assert Task.objects.count() == 2


def test_submit_from_plain_text_file_needs_a_lane(tmp_path):
    path = tmp_path / "goals.txt"
    path.write_text("Write the docs\n# a comment\n\nFix the footer\n")
    with pytest.raises(CommandError, match="plain-text files need --lane"):
        vibe("submit", "--from-file", str(path))
    out = vibe("submit", "--from-file", str(path), "--lane", "frontend")
    assert out.startswith("submitted 2 tasks")
    assert list(Task.objects.values_list("goal", flat=True).order_by("pk")) == [
        "Write the docs",
        "Fix the footer",
    ]


def test_status_text_and_json():
    from django.utils import timezone

    lifecycle.submit("Waiting", lane="backend", actor="cli")
    # Online means a fresh heartbeat (tests/workers_app/test_liveness.py has the silent case).
    Worker.objects.filter(pk="@security-1").update(last_heartbeat=timezone.now())
    text = vibe("status")
    assert "Workers:" in text and "backend: 1" in text
    assert "pending: 1" in text
    data = vibe_json("status")
    assert data["tasks"]["pending"] == 1
    lanes = {row["lane"]: row for row in data["workers"]}
    assert lanes["security"] == {
        "lane": "security",
        "workers": 1,
        "online": 1,
        "active": 0,
        "capacity": 3,
    }


def test_retry_moves_dead_letter_task_to_pending_as_cli():
    task = dead_letter_task()
    out = vibe("retry", str(task.pk))
    assert f"Task #{task.pk} reset to pending" in out
    task.refresh_from_db()
    assert (task.status, task.attempt_count) == (Status.PENDING, 0)
    assert task.history.last().actor == "cli"


def test_retry_of_pending_task_is_refused_with_the_lifecycle_message():
    task = lifecycle.submit("Fine", lane="backend", actor="cli")
    with pytest.raises(CommandError) as excinfo:
        vibe("retry", str(task.pk))
    assert excinfo.value.returncode == 1
    assert "is pending; only dead letter or blocked tasks can be retried" in str(excinfo.value)
    assert task.history.count() == 1


def test_unknown_task_is_an_error_and_changes_nothing():
    for command in ("retry", "approve", "cancel", "task"):
        with pytest.raises(CommandError, match="task 4242 does not exist"):
            vibe(command, "4242")
    assert not TaskHistory.objects.exists()


def test_approve_and_cancel(approver):
    risky = lifecycle.submit("Drop a column", lane="backend", actor="cli", risk="high")
    data = vibe_json("approve", str(risky.pk), "--as", approver.username)
    assert data["status"] == Status.PENDING
    assert risky.history.last().actor == f"user:{approver.username}"
    out = vibe("cancel", str(risky.pk))
    assert out.strip() == f"Task #{risky.pk} cancelled"
    risky.refresh_from_db()
    assert risky.status == Status.CANCELLED


def test_as_user_without_permission_is_refused(viewer):
    risky = lifecycle.submit("Drop a table", lane="backend", actor="cli", risk="high")
    with pytest.raises(CommandError, match="vera does not have the permission to approve"):
        vibe("approve", str(risky.pk), "--as", viewer.username)
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        vibe("approve", str(risky.pk), "--as", "ghost")
    risky.refresh_from_db()
    assert risky.status == Status.AWAITING_APPROVAL


def test_dlq_lists_newest_first():
    older = dead_letter_task("Older failure")
    newer = dead_letter_task("Newer failure")
    data = vibe_json("dlq")
    assert [t["id"] for t in data["tasks"]] == [newer.pk, older.pk]
    assert data["tasks"][0]["error_type"] == "agent_exit"
    text = vibe("dlq")
    assert text.splitlines()[0] == "2 dead-letter tasks"
    assert "agent_exit, 1 attempt" in text


def test_worker_shows_load_and_current_tasks():
    lifecycle.submit("Build it", lane="backend", actor="cli")
    task = lifecycle.claim_next("@backend-1")
    data = vibe_json("worker", "backend-1")
    assert data["worker_id"] == "@backend-1"
    assert (data["active_tasks"], data["capacity_limit"]) == (1, 2)
    assert data["current_tasks"] == [{"id": task.pk, "goal": "Build it"}]
    assert "load 1/2" in vibe("worker", "@backend-1")
    with pytest.raises(CommandError, match="worker @nobody does not exist"):
        vibe("worker", "nobody")


def test_task_shows_a_review_errors_hint_as_it_does_a_workers():
    """Review hints lived in chat only; the CLI reads the same catalogue."""
    task = lifecycle.submit("Blocked by its review", lane="backend", actor="cli")
    Task.objects.filter(pk=task.pk).update(status=Status.BLOCKED, last_error_type="review_failed")
    assert vibe_json("task", str(task.pk))["hint"].startswith("Reviews kept failing")


def test_task_shows_full_history():
    task = dead_letter_task()
    data = vibe_json("task", str(task.pk))
    assert [h["to"] for h in data["history"]] == ["pending", "in_progress", "dead_letter"]
    assert data["hint"].startswith("The agent exited non-zero")
    text = vibe("task", str(task.pk))
    assert "pending → in_progress by worker:@backend-1" in text


def test_pause_and_resume_worker():
    assert "paused" in vibe("pause", "@qa-1")
    assert Worker.objects.get(pk="@qa-1").status == WorkerStatus.PAUSED
    with pytest.raises(CommandError, match="already paused"):
        vibe("pause", "@qa-1")
    assert vibe_json("resume", "qa-1")["status"] == WorkerStatus.ONLINE


def test_link_chat_users(approver):
    out = vibe("link", "slack", "U024BE7LH", approver.username)
    assert out.strip() == f"linked slack:U024BE7LH → {approver.username}"
    assert ChatLink.objects.get(platform="slack", external_id="U024BE7LH").user == approver
    vibe("link", "discord", "80351110224678912", approver.username)
    with pytest.raises(CommandError) as excinfo:
        vibe("link", "slack", "not-an-id", approver.username)
    assert excinfo.value.returncode == 2
    with pytest.raises(CommandError, match="no user named"):
        vibe("link", "slack", "U999", "ghost")
    vibe("unlink", "slack", "U024BE7LH")
    assert ChatLink.objects.count() == 1


def test_reap_requeues_expired_leases():
    from datetime import timedelta

    from django.utils import timezone

    lifecycle.submit("Long job", lane="backend", actor="cli")
    task = lifecycle.claim_next("@backend-1")
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert vibe_json("reap") == {"ok": True, "requeued": 1}
    task.refresh_from_db()
    assert (task.status, task.last_error_type, task.attempt_count) == (
        Status.PENDING,
        "lease_expired",
        1,
    )


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "vibe", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exit_codes_and_one_line_errors_from_a_real_shell(subprocess_env):
    ok = run_cli("submit", "From a shell", "--lane", "qa", env=subprocess_env)
    assert ok.returncode == 0, ok.stderr
    task_id = int(ok.stdout.strip())
    assert Task.objects.get(pk=task_id).goal == "From a shell"

    missing = run_cli("retry", "777", env=subprocess_env)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "vibe: task 777 does not exist"

    usage = run_cli("retry", "abc", env=subprocess_env)
    assert usage.returncode == 2
    assert "'abc' is not a task id" in usage.stderr
    assert "Traceback" not in usage.stderr + missing.stderr


# --- Odd input: a usage error, never a traceback ----------------------------------------------


def test_cli_dlq_limit_beyond_the_database_is_a_usage_error():
    with pytest.raises(CommandError, match="at most") as info:
        call_command("vibe", "dlq", "--limit", "99999999999999999999", stdout=StringIO())
    assert info.value.returncode == 2


def test_cli_submit_from_stdin_that_is_not_utf8_is_refused_cleanly(monkeypatch):
    raw = io.TextIOWrapper(io.BytesIO(b"\xff\xfe goal\n"), errors="surrogateescape")
    monkeypatch.setattr("sys.stdin", raw)
    with pytest.raises(CommandError, match="cannot read it"):
        call_command("vibe", "submit", "--from-file", "-", "--lane", "qa", stdout=StringIO())
    assert not Task.objects.exists()


def test_cli_submit_from_file_refuses_true_as_a_prerequisite(tmp_path):
    first = lifecycle.submit("Prerequisite", lane="qa", actor="cli")
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"goal": "x", "lane": "qa", "after": [True]}) + "\n")
    with pytest.raises(CommandError, match="list of task ids"):
        call_command("vibe", "submit", "--from-file", str(path), stdout=StringIO())
    assert list(Task.objects.values_list("pk", flat=True)) == [first.pk]
