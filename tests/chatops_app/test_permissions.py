"""Who may read and who may act, through every door: the Slack command and button, the Discord
command and button, and the CLI with `--as`. Each cell is a live, correctly signed request.

Reading (task, dlq, status, worker) needs a linked, active person with `tasks_app.view_task`
(the Viewer role and up); retrying needs Operator. Unlinked and inactive people count alike.
"""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from chatops_app.models import ChatLink
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from tests.chatops_app import doors
from tests.chatops_app.factories import dead_letter_task

PERSONAS = ("unlinked", "inactive", "outsider", "viewer", "operator", "approver")
READERS = {"viewer", "operator", "approver"}
RETRIERS = {"operator", "approver"}
SLACK_IDS = {persona: f"U0{persona.upper()}" for persona in PERSONAS}
DISCORD_IDS = {persona: str(300000000000000000 + n) for n, persona in enumerate(PERSONAS)}


@pytest.fixture(autouse=True)
def key(settings) -> Ed25519PrivateKey:
    settings.VIBE_SLACK_SIGNING_SECRET = doors.SLACK_SECRET
    private = Ed25519PrivateKey.generate()
    settings.VIBE_DISCORD_PUBLIC_KEY = doors.public_hex(private)
    return private


@pytest.fixture
def people(viewer, operator, approver) -> dict[str, User | None]:
    """Every persona, linked on both platforms (except the unlinked one)."""
    inactive = User.objects.create_user("ingrid", is_active=False)
    inactive.groups.set(approver.groups.all())  # an approver who left
    outsider = User.objects.create_user("olga")  # linked, but in no role
    found = {
        "unlinked": None,
        "inactive": inactive,
        "outsider": outsider,
        "viewer": viewer,
        "operator": operator,
        "approver": approver,
    }
    for persona, user in found.items():
        if user is not None:
            ChatLink.objects.create(platform="slack", external_id=SLACK_IDS[persona], user=user)
            ChatLink.objects.create(platform="discord", external_id=DISCORD_IDS[persona], user=user)
    return found


@pytest.mark.parametrize("door", ["slack", "discord"])
@pytest.mark.parametrize("persona", PERSONAS)
def test_read_commands_by_role(client, key, people, worker, door, persona):
    task = dead_letter_task(worker, goal="the secret roadmap")
    for command in ("task", "dlq", "status", "worker"):
        if door == "slack":
            text = {
                "task": f"task {task.pk}",
                "dlq": "dlq",
                "status": "status",
                "worker": "worker @chat-test",
            }[command]
            answer = doors.answer_text(doors.slack_command(client, text, SLACK_IDS[persona]))
        else:
            value = {"task": task.pk, "worker": "@chat-test"}.get(command)
            response = doors.discord_command(
                client, key, command, value, user_id=DISCORD_IDS[persona]
            )
            answer = doors.answer_text(response)
        refused = "cannot read tasks" in answer or "permission to view tasks" in answer
        assert refused == (persona not in READERS), (door, persona, command, answer[:200])
        if refused:
            assert "secret roadmap" not in answer and "load 0/5" not in answer
    help_answer = doors.answer_text(doors.slack_command(client, "help", SLACK_IDS[persona]))
    assert "Usage: /vibe" in help_answer  # help is for anyone


def _retry(client, key, door: str, persona: str, task: Task):
    if door == "slack command":
        return doors.slack_command(client, f"retry {task.pk}", SLACK_IDS[persona])
    if door == "slack button":
        return doors.slack_click(client, "retry", task.pk, SLACK_IDS[persona])
    if door == "discord command":
        return doors.discord_command(client, key, "retry", task.pk, user_id=DISCORD_IDS[persona])
    return doors.discord_click(client, key, "retry", task.pk, user_id=DISCORD_IDS[persona])


CHAT_DOORS = ("slack command", "slack button", "discord command", "discord button")


@pytest.mark.parametrize("door", CHAT_DOORS)
@pytest.mark.parametrize("persona", PERSONAS)
def test_retry_by_role(client, key, people, worker, door, persona):
    task = dead_letter_task(worker)
    response = _retry(client, key, door, persona, task)
    assert response.status_code == 200
    task.refresh_from_db()
    allowed = persona in RETRIERS
    assert (task.status == Status.PENDING) == allowed, (door, persona)
    chat_rows = TaskHistory.objects.filter(task=task, actor__regex=r"^(slack|discord):")
    assert chat_rows.count() == (1 if allowed else 0)
    if door != "slack button" and not allowed:  # a Slack click answers via its response_url
        answer = doors.answer_text(response)
        expected = "not linked" if persona in ("unlinked", "inactive") else "does not have"
        assert expected in answer


@pytest.mark.parametrize("persona", [p for p in PERSONAS if p != "unlinked"])
def test_cli_as_a_user_by_role(people, worker, persona):
    task = dead_letter_task(worker)
    user = people[persona]
    if persona in RETRIERS:
        call_command("vibe", "retry", str(task.pk), "--as", user.username, stdout=StringIO())
        task.refresh_from_db()
        assert task.status == Status.PENDING
        assert task.history.last().actor == f"user:{user.username}"
    else:
        refusal = "is inactive" if persona == "inactive" else "does not have the permission"
        with pytest.raises(CommandError, match=refusal):
            call_command("vibe", "retry", str(task.pk), "--as", user.username, stdout=StringIO())
        task.refresh_from_db()
        assert task.status == Status.DEAD_LETTER


def test_the_cli_without_as_is_trusted_to_read(worker):
    task = dead_letter_task(worker)
    out = StringIO()
    call_command("vibe", "task", str(task.pk), stdout=out)
    assert f"Task #{task.pk}" in out.getvalue()
