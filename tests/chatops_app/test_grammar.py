"""The command grammar shared by Slack, Discord and the CLI."""

from __future__ import annotations

import pytest

from chatops_app.grammar import execute, execute_button
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory

pytestmark = pytest.mark.django_db


def run(text: str, user=None, actor: str = "slack:U1", door: str = "slack"):
    return execute(text, user=user, actor=actor, door=door)


def dead_letter(goal: str = "Broken build") -> Task:
    lifecycle.submit(goal, lane="qa", actor="cli", max_attempts=1)
    claimed = lifecycle.claim_next("@qa-1")
    lifecycle.fail(
        claimed.pk, worker_id="@qa-1", token=claimed.claim_token, error_type="timeout", error="slow"
    )
    return Task.objects.get(pk=claimed.pk)


@pytest.mark.parametrize("text", ["", "help", "HELP"])
def test_help_lists_every_command(text):
    reply = run(text)
    assert reply.ok
    for command in ("status", "retry <id>", "approve <id>", "dlq", "worker <id>", "task <id>"):
        assert any(line.startswith(command) for line in reply.lines)


@pytest.mark.parametrize(
    "text", ["bogus", "retry", "cancel", "merge 1 2", "status now", "worker", "rebase"]
)
def test_unknown_or_malformed_text_gets_the_usage(text):
    reply = run(text)
    assert not reply.ok
    assert reply.title.startswith("I don't understand")
    assert "dlq — the dead-letter queue, newest first" in reply.lines


def test_status_is_public_and_counts(viewer):
    lifecycle.submit("One", lane="backend", actor="cli")
    reply = run("status", user=viewer)
    assert reply.ok and reply.public
    assert reply.data["tasks"]["pending"] == 1
    assert "  • pending: 1" in reply.lines


def test_dlq_offers_retry_buttons(viewer):
    task = dead_letter()
    reply = run("dlq", user=viewer)
    assert reply.title == "1 dead-letter task"
    assert [(b.action, b.task_id) for b in reply.buttons] == [("retry", task.pk)]
    assert not reply.public


def test_linked_operator_can_retry_and_is_recorded_as_the_chat_user(operator):
    task = dead_letter()
    reply = run(f"retry {task.pk}", user=operator, actor="slack:U42")
    assert reply.ok, reply.title
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.history.last().actor == "slack:U42"


def test_unlinked_user_is_refused_with_how_to_link():
    task = dead_letter()
    before = TaskHistory.objects.count()
    reply = run(f"retry {task.pk}", user=None, actor="slack:U99")
    assert not reply.ok
    assert "not linked" in reply.title
    assert "vibe link slack U99 <username>" in reply.title
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    assert TaskHistory.objects.count() == before


def test_viewer_cannot_approve(viewer):
    task = lifecycle.submit("Risky", lane="backend", actor="cli", risk="high")
    reply = run(f"approve {task.pk}", user=viewer)
    assert not reply.ok
    assert "vera does not have the permission to approve" in reply.title
    task.refresh_from_db()
    assert task.status == Status.AWAITING_APPROVAL


def test_lifecycle_refusals_come_back_as_replies(approver):
    task = lifecycle.submit("Fine", lane="backend", actor="cli")
    reply = run(f"approve {task.pk}", user=approver)
    assert not reply.ok
    assert reply.title == (
        f"task {task.pk} is pending; only awaiting approval tasks can be approved"
    )
    assert not run("approve 99999", user=approver).ok
    assert "not a task id" in run("approve abc", user=approver).title


def test_button_uses_the_same_checks(approver, viewer):
    task = lifecycle.submit("Risky", lane="backend", actor="cli", risk="high")
    refused = execute_button(
        "approve", str(task.pk), user=viewer, actor="discord:1", door="discord"
    )
    assert not refused.ok
    done = execute_button("approve", str(task.pk), user=approver, actor="discord:2", door="discord")
    assert done.ok
    assert task.history.last().actor == "discord:2"
    assert not execute_button("delete", str(task.pk), user=approver, actor="x", door="slack").ok


def test_task_reply_shows_history_hint_and_buttons(viewer):
    task = dead_letter()
    reply = run(f"task {task.pk}", user=viewer)
    assert reply.ok
    assert any(line.startswith("hint: The agent ran past its time limit") for line in reply.lines)
    assert [b.action for b in reply.buttons] == ["retry"]
    assert reply.data["history"][-1]["to"] == "dead_letter"


def test_worker_reply_accepts_id_without_at_sign(viewer):
    reply = run("worker security-1", user=viewer)
    assert reply.ok
    assert reply.data["worker_id"] == "@security-1"
    assert reply.data["display_status"] == "offline"  # never heartbeated
    assert not run("worker @ghost", user=viewer).ok


@pytest.mark.parametrize("text", ["status", "dlq", "task 1", "worker @qa-1"])
def test_reading_from_chat_needs_a_linked_person_who_may_view(text, django_user_model):
    outsider = django_user_model.objects.create_user("olga")  # linked, but in no group
    unlinked = run(text, user=None, actor="slack:U99")
    assert not unlinked.ok and "not linked" in unlinked.title
    assert "vibe link slack U99 <username>" in unlinked.title
    refused = run(text, user=outsider)
    assert not refused.ok
    assert refused.title == (
        "olga does not have the permission to view tasks (tasks_app.view_task)."
    )
    assert refused.lines == [] and refused.buttons == []


def test_the_cli_reads_without_a_user():
    task = dead_letter()
    reply = execute(f"task {task.pk}", user=None, actor="cli", door="cli", trusted=True)
    assert reply.ok and reply.data["id"] == task.pk


def test_worker_id_with_a_nul_byte_gets_a_reply_not_a_database_error(viewer):
    reply = execute("worker @backend\x00-1", user=viewer, actor="slack:U1", door="slack")
    assert reply.ok and reply.data["worker_id"] == "@backend-1"
