"""`/vibe` in Slack: every command rendered as Block Kit, permissions, actors and escaping."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from chatops_app.models import ChatLink
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from tests.chatops_app.factories import dead_letter_task, slack_post

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
SECRET = "test-slack-signing-secret"
NASTY_GOAL = (
    "Fix <!channel> & <@U999|boss> @everyone *bold* _it_ `code` <https://evil.example|click>"
)


@pytest.fixture(autouse=True)
def slack_secret(settings) -> str:
    settings.VIBE_SLACK_SIGNING_SECRET = SECRET
    return SECRET


def _awaiting(goal: str = "drop the old billing tables") -> Task:
    task = lifecycle.submit(goal, lane="backend", actor="cli", risk="high")
    assert task.status == Status.AWAITING_APPROVAL
    return task


def _link(user, slack_id: str) -> None:
    ChatLink.objects.create(platform="slack", external_id=slack_id, user=user)


def _send(client, body: bytes):
    return slack_post(client, "chatops_app:slack_commands", body, SECRET)


READER = "U0READER"


@pytest.fixture
def reader(viewer):
    """The person `vibe()` speaks as: a linked viewer, since reading from chat needs one."""
    _link(viewer, READER)
    return viewer


TRIGGER_IDS = itertools.count(1)


def vibe(client, text: str, user_id: str = READER) -> dict:
    fields = {"command": "/vibe", "text": text, "user_id": user_id, "team_id": "T1"}
    # Slack gives every invocation its own trigger_id (so its signature differs from others').
    fields["trigger_id"] = f"{next(TRIGGER_IDS)}.1.abc"
    body = urlencode(fields).encode()
    response = _send(client, body)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    message = response.json()
    _assert_valid_block_kit(message)
    return message


def _assert_valid_block_kit(message: dict) -> None:
    """The limits Slack enforces, so a long reply never turns into `invalid_blocks`."""
    assert message["response_type"] in ("ephemeral", "in_channel")
    assert message["text"].strip()
    assert len(message["text"]) <= 3000
    blocks = message["blocks"]
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert len(block["text"]["text"]) <= 150
        elif block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        elif block["type"] == "actions":
            ids = [e["action_id"] for e in block["elements"]]
            assert len(ids) == len(set(ids)), "action_id must be unique within its block"


def _texts(message: dict) -> list[str]:
    out = [message["text"]]
    for block in message["blocks"]:
        if "text" in block:
            out.append(block["text"]["text"])
        for element in block.get("elements", []):
            out.append(element["text"]["text"])
    return out


def _all_text(message: dict) -> str:
    return "\n".join(_texts(message))


def _buttons(message: dict) -> list[tuple[str, str]]:
    return [
        (element["action_id"], element["value"])
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


# --- Every command renders --------------------------------------------------------------------


def test_status_is_posted_to_the_channel(client, reader, worker):
    dead_letter_task(worker)
    message = vibe(client, "status")
    assert message["response_type"] == "in_channel"
    assert message["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Vibe status", "emoji": False},
    }
    text = _all_text(message)
    assert "backend" in text
    assert "dead letter: 1" in text


def test_dlq_lists_dead_letter_tasks_with_retry_buttons(client, reader, worker):
    first = dead_letter_task(worker, "first broken thing")
    second = dead_letter_task(worker, "second broken thing")
    message = vibe(client, "dlq")
    assert message["response_type"] == "ephemeral"
    text = _all_text(message)
    assert "2 dead-letter tasks" in text
    assert f"#{first.pk}" in text and "second broken thing" in text
    assert set(_buttons(message)) == {
        ("vibe_retry", str(first.pk)),
        ("vibe_retry", str(second.pk)),
    }


def test_dlq_when_empty(client, reader):
    message = vibe(client, "dlq")
    assert "The dead-letter queue is empty" in _all_text(message)
    assert _buttons(message) == []


def test_worker_shows_lane_and_load(client, reader, worker):
    message = vibe(client, "worker @chat-test")
    text = _all_text(message)
    assert "Worker @chat-test" in text
    assert "load 0/5" in text
    assert message["response_type"] == "ephemeral"


def test_unknown_worker_is_a_friendly_refusal(client, reader):
    message = vibe(client, "worker @nobody")
    assert "⚠️" in message["blocks"][0]["text"]["text"]
    assert "does not exist" in _all_text(message)


def test_task_shows_history_and_the_button_that_applies(client, reader, worker):
    dead = dead_letter_task(worker)
    message = vibe(client, f"task {dead.pk}")
    text = _all_text(message)
    assert f"Task #{dead.pk}" in text
    assert "build the login page" in text
    assert "agent_exit" in text
    assert "History:" in text
    assert _buttons(message) == [("vibe_retry", str(dead.pk))]

    waiting = _awaiting()
    assert _buttons(vibe(client, f"task {waiting.pk}")) == [("vibe_approve", str(waiting.pk))]


def test_help_and_empty_text_show_the_usage(client, db):
    for text in ("help", ""):
        message = vibe(client, text)
        assert message["response_type"] == "ephemeral"
        body = _all_text(message)
        assert "Usage: /vibe" in body
        assert "retry &lt;id&gt;" in body  # the grammar's own "<id>" is escaped too


def test_unknown_command_gets_the_usage(client, db):
    message = vibe(client, "launch the rockets")
    assert message["response_type"] == "ephemeral"
    assert message["blocks"][0]["text"]["text"].startswith("⚠️")
    assert "Usage: /vibe" in _all_text(message)


def test_slack_bolt_slash_command_body_is_answered(client, db):
    """A real slash-command body as Slack sends it (bolt's fixture): text "Hi" → usage."""
    body = (FIXTURES / "slash_command_bolt.form").read_bytes().strip()
    response = _send(client, body)
    assert response.status_code == 200
    assert "Usage: /vibe" in _all_text(response.json())


def test_long_replies_stay_within_slack_limits(client, reader, worker):
    for n in range(12):
        dead_letter_task(worker, f"broken {n} " + "x" * 400)
    message = vibe(client, "dlq")
    assert "… and 2 more" in _all_text(message)
    long_error = vibe(client, "task " + "9" * 300)
    assert "not a task id" in _all_text(long_error) or "does not exist" in _all_text(long_error)


# --- Who may act ------------------------------------------------------------------------------


def test_linked_approver_can_approve(client, approver):
    _link(approver, "U0ALICE")
    task = _awaiting()
    message = vibe(client, f"approve {task.pk}", "U0ALICE")
    assert f"Task #{task.pk} approved" in _all_text(message)
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.approved_by == "slack:U0ALICE"
    assert task.history.last().actor == "slack:U0ALICE"


def test_linked_approver_can_retry(client, approver, worker):
    _link(approver, "U0ALICE")
    task = dead_letter_task(worker)
    message = vibe(client, f"retry #{task.pk}", "U0ALICE")
    assert "reset to pending" in _all_text(message)
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.attempt_count == 0
    assert task.history.last().actor == "slack:U0ALICE"


def _snapshot(task: Task) -> tuple:
    task.refresh_from_db()
    return task.status, task.attempt_count, task.updated_at, task.history.count()


def test_linked_viewer_cannot_approve_or_retry(client, viewer, worker, caplog):
    _link(viewer, "U0VERA")
    waiting, dead = _awaiting(), dead_letter_task(worker)
    before = (_snapshot(waiting), _snapshot(dead))
    approve = _all_text(vibe(client, f"approve {waiting.pk}", "U0VERA"))
    retry = _all_text(vibe(client, f"retry {dead.pk}", "U0VERA"))
    assert "vera does not have the permission to approve" in approve
    assert "tasks_app.approve_task" in approve
    assert "vera does not have the permission to retry" in retry
    assert (_snapshot(waiting), _snapshot(dead)) == before
    assert "refused approve" in caplog.text and "slack:U0VERA" in caplog.text


def test_unlinked_user_cannot_act_and_is_told_how_to_link(client, worker):
    dead = dead_letter_task(worker)
    before = _snapshot(dead)
    message = vibe(client, f"retry {dead.pk}", "U0STRANGER")
    text = _all_text(message)
    assert "not linked" in text
    assert "vibe link slack U0STRANGER" in text
    assert message["response_type"] == "ephemeral"
    assert _snapshot(dead) == before


def test_inactive_linked_user_cannot_act_or_read(client, approver, worker):
    approver.is_active = False
    approver.save()
    _link(approver, "U0GONE")
    dead = dead_letter_task(worker)
    before = _snapshot(dead)
    # Switched off in the admin means switched off in chat: they count as unlinked.
    assert "not linked" in _all_text(vibe(client, f"retry {dead.pk}", "U0GONE"))
    assert "not linked" in _all_text(vibe(client, f"task {dead.pk}", "U0GONE"))
    assert _snapshot(dead) == before


def test_read_commands_need_a_linked_viewer(client, worker, caplog):
    dead = dead_letter_task(worker)
    for text in (f"task {dead.pk}", "dlq", "status", "worker @chat-test"):
        message = vibe(client, text, "U0STRANGER")
        body = _all_text(message)
        assert "cannot read tasks" in body and "vibe link slack U0STRANGER" in body
        assert "build the login page" not in body and "History:" not in body
        assert _buttons(message) == []
    assert "refused task by slack:U0STRANGER (unlinked)" in caplog.text


def test_illegal_move_comes_back_with_the_lifecycle_message(client, approver):
    _link(approver, "U0ALICE")
    task = lifecycle.submit("fine work", lane="backend", actor="cli")
    text = _all_text(vibe(client, f"retry {task.pk}", "U0ALICE"))
    assert f"task {task.pk} is pending" in text
    assert "only dead letter or blocked tasks can be retried" in text
    text = _all_text(vibe(client, "approve 987654", "U0ALICE"))
    assert "task 987654 does not exist" in text


# --- Escaping ---------------------------------------------------------------------------------


def test_task_text_is_escaped_so_it_cannot_ping_or_format(client, reader, worker):
    task = dead_letter_task(worker, NASTY_GOAL)
    for text in (f"task {task.pk}", "dlq"):
        message = vibe(client, text)
        raw = json.dumps(message)
        assert "<!channel>" not in raw
        assert "<@U999" not in raw
        assert "<https://evil" not in raw
        body = _all_text(message)
        assert "&lt;!channel&gt;" in body
        assert "&amp;" in body
        # Lines are plain_text, so *bold* and `code` are shown as typed, not formatted.
        for block in message["blocks"]:
            if block["type"] in ("section", "header"):
                assert block["text"]["type"] == "plain_text"
                assert block["text"]["emoji"] is False
    assert "*bold* _it_ `code`" in _all_text(vibe(client, f"task {task.pk}"))


def test_typed_text_echoed_back_is_escaped(client, db):
    message = vibe(client, "<!here> please")
    assert "<!here>" not in json.dumps(message)
    assert "&lt;!here&gt;" in _all_text(message)


def test_refused_attempts_leave_no_history(client, worker, viewer):
    _link(viewer, "U0VERA")
    dead = dead_letter_task(worker)
    vibe(client, f"retry {dead.pk}", "U0VERA")
    vibe(client, f"retry {dead.pk}", "U0NOBODY")
    assert not TaskHistory.objects.filter(actor__startswith="slack:").exists()


def test_app_manifest_points_at_our_endpoints():
    manifest_path = Path(__file__).resolve().parents[2] / "chatops_app" / "slack_app_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/vibe"
    assert command["url"].endswith(reverse("chatops_app:slack_commands"))
    assert "approve <id>" in command["usage_hint"]
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].endswith(reverse("chatops_app:slack_interactions"))
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {"commands", "chat:write"}


def test_an_internal_error_is_a_friendly_reply_not_a_500(client, db, caplog):
    from django.db import connection

    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute("ALTER TABLE chat_links RENAME TO chat_links_away")
    body = urlencode({"text": "status", "user_id": "U0ANYONE"}).encode()
    response = _send(client, body)
    assert response.status_code == 200
    assert response.json() == {
        "response_type": "ephemeral",
        "text": "Vibe Factory hit an internal error answering this; it has been logged.",
    }
    assert "Slack request failed" in caplog.text
