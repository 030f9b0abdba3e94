"""`/vibe` and its buttons over Slack's Socket Mode, against a stand-in Socket Mode server.

The door is slack-sdk's real built-in client: it calls `apps.connections.open` on the stand-in,
opens the `ws://` URL it gets, and answers envelopes pushed down the socket. The handlers run on
the client's own threads with their own database connections, so these tests commit (transaction
=True) instead of running inside one rolled-back transaction.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from django.core.management import CommandError, call_command

from chatops_app.models import ChatLink
from chatops_app.slack import socket as slack_socket
from chatops_app.slack import views as slack
from chatops_app.slack.socket import SocketDoor
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from tests.chatops_app import doors
from tests.chatops_app.factories import dead_letter_task
from tests.chatops_app.socket_standin import APP_TOKEN, SocketModeStandIn
from tests.chatops_app.test_slack_interactions import ResponseUrlStandIn
from tests.conftest import REPO_ROOT
from workers_app.models import Worker

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR, APPROVER, VIEWER = "U0OTTO", "U0ALICE", "U0VERA"


@pytest.fixture
def bound(settings) -> None:
    settings.VIBE_SLACK_TEAM_IDS = [doors.SLACK_TEAM]
    settings.VIBE_SLACK_APP_ID = doors.SLACK_APP


@pytest.fixture
def linked(operator, approver, viewer) -> None:
    for slack_id, user in ((OPERATOR, operator), (APPROVER, approver), (VIEWER, viewer)):
        ChatLink.objects.create(platform="slack", external_id=slack_id, user=user)


@pytest.fixture
def standin():
    with SocketModeStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def door(standin, bound):
    door = SocketDoor(app_token=APP_TOKEN, api_url=standin.api_url)
    door.connect()
    assert standin.connected.wait(5)
    yield door
    door.close()


@pytest.fixture
def response_url():
    stand_in = ResponseUrlStandIn()
    yield stand_in
    stand_in.close()


def test_a_slash_command_is_answered_in_its_acknowledgement(door, standin, linked, worker):
    task = dead_letter_task(worker)

    envelope = standin.command(f"retry {task.pk}", OPERATOR)
    ack, seconds = standin.ack(envelope)

    assert seconds < 3.0  # Slack's limit
    assert ack["envelope_id"] == envelope
    assert f"Task #{task.pk} reset to pending" in ack["payload"]["text"]
    assert ack["payload"]["response_type"] == "ephemeral"
    assert ack["payload"]["blocks"][0]["type"] == "header"  # the same Block Kit as over HTTP
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.history.last().actor == f"slack:{OPERATOR}"
    assert standin.opened == 1


def test_the_same_permissions_and_wording_as_the_http_door(door, standin, linked, client, settings):
    settings.VIBE_SLACK_SIGNING_SECRET = doors.SLACK_SECRET
    risky = lifecycle.submit("Drop a column", lane="backend", actor="cli", risk="high")

    over_socket, _ = standin.ack(standin.command(f"approve {risky.pk}", VIEWER))
    over_http = doors.slack_command(client, f"approve {risky.pk}", VIEWER).json()

    assert over_socket["payload"] == over_http
    assert "vera does not have the permission to approve tasks" in over_http["text"]
    assert Task.objects.get(pk=risky.pk).status == Status.AWAITING_APPROVAL


def test_a_button_is_acknowledged_first_then_the_message_is_updated(
    door, standin, linked, response_url
):
    risky = lifecycle.submit("Rotate the keys", lane="backend", actor="cli", risk="high")

    envelope = standin.click("approve", risky.pk, APPROVER, response_url=response_url.url)
    ack, seconds = standin.ack(envelope)
    acked_at = time.monotonic()
    _path, message = response_url.next()

    assert seconds < 3.0
    assert ack == {"envelope_id": envelope}  # an empty acknowledgement: nothing to show yet
    assert time.monotonic() >= acked_at
    assert message["replace_original"] is True
    assert f"Task #{risky.pk} approved — by user-{APPROVER}" in message["text"]
    risky.refresh_from_db()
    assert risky.status == Status.PENDING
    assert risky.history.last().actor == f"slack:{APPROVER}"


def test_a_refused_click_is_told_to_the_clicker_only(door, standin, linked, response_url):
    risky = lifecycle.submit("Rotate the keys", lane="backend", actor="cli", risk="high")

    standin.ack(standin.click("approve", risky.pk, VIEWER, response_url=response_url.url))
    _path, message = response_url.next()

    assert message["response_type"] == "ephemeral" and message["replace_original"] is False
    assert "does not have the permission to approve" in message["text"]
    assert Task.objects.get(pk=risky.pk).status == Status.AWAITING_APPROVAL


def test_an_envelope_sent_again_is_acknowledged_and_changes_nothing(door, standin, linked):
    task = lifecycle.submit("Stop me", lane="backend", actor="cli")

    first, _ = standin.ack(standin.command(f"cancel {task.pk}", OPERATOR, envelope_id="env-x"))
    again, _ = standin.ack(standin.command(f"cancel {task.pk}", OPERATOR, envelope_id="env-x"))

    assert f"Task #{task.pk} cancelled" in first["payload"]["text"]
    assert again == {"envelope_id": "env-x"}
    assert TaskHistory.objects.filter(task=task, to_status=Status.CANCELLED).count() == 1


def test_another_workspace_is_refused_and_changes_nothing(door, standin, linked):
    task = lifecycle.submit("Stop me", lane="backend", actor="cli")

    ack, _ = standin.ack(standin.command(f"cancel {task.pk}", OPERATOR, team_id="T0EVIL"))

    assert ack["payload"]["text"] == slack_socket.NOT_OURS_TEXT
    assert Task.objects.get(pk=task.pk).status == Status.PENDING


def test_a_click_from_another_workspace_does_nothing(door, standin, linked, response_url):
    risky = lifecycle.submit("Rotate the keys", lane="backend", actor="cli", risk="high")

    ack, _ = standin.ack(
        standin.click("approve", risky.pk, APPROVER, response_url=response_url.url, team="T0X")
    )

    assert ack == {"envelope_id": ack["envelope_id"]}
    response_url.assert_nothing()
    assert Task.objects.get(pk=risky.pk).status == Status.AWAITING_APPROVAL


def test_a_slow_command_is_acknowledged_in_time_and_answered_later(
    standin, bound, linked, response_url, monkeypatch
):
    answer = slack.handle_command

    def slow(form):
        time.sleep(0.6)
        return answer(form)

    monkeypatch.setattr(slack, "handle_command", slow)
    door = SocketDoor(app_token=APP_TOKEN, api_url=standin.api_url, ack_budget=0.1)
    door.connect()
    try:
        ack, seconds = standin.ack(standin.command("help", VIEWER, response_url=response_url.url))
        _path, later = response_url.next()
    finally:
        door.close()

    assert seconds < 0.5
    assert ack["payload"]["text"] == slack_socket.LATE_TEXT
    assert "Usage: /vibe" in later["text"]


def test_submit_over_socket_mode_answers_with_the_new_task(door, standin, linked, settings):
    settings.VIBE_BASE_URL = "https://factory.example.com"

    ack, _ = standin.ack(standin.command("submit backend key:s-1 Add a health endpoint", OPERATOR))

    task = Task.objects.get(idempotency_key="s-1")
    assert f"Task #{task.pk} submitted to the backend lane" in ack["payload"]["text"]
    assert f"https://factory.example.com/tasks/{task.pk}/" in ack["payload"]["text"]
    assert task.goal == "Add a health endpoint" and task.history.last().actor == f"slack:{OPERATOR}"


def test_the_door_connects_anew_when_slack_refreshes_the_socket(door, standin, linked):
    standin.refresh()

    assert standin.opened == 2  # a fresh URL from apps.connections.open
    ack, _ = standin.ack(standin.command("status", VIEWER))
    assert "Vibe status" in ack["payload"]["text"]


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "set VIBE_SLACK_APP_TOKEN"),
        ("xoxb-a-bot-token", "is not an app-level token"),
        ("xapp-1-wrong", "Slack refused apps.connections.open (invalid_auth)"),
    ],
)
def test_the_command_says_what_is_wrong_with_the_token(standin, settings, token, message):
    settings.VIBE_SLACK_APP_TOKEN = token
    settings.VIBE_SLACK_API_URL = standin.api_url

    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("slacksocket")


@pytest.mark.slow
def test_runfactory_starts_slacksocket_which_serves_the_command(
    subprocess_env, standin, linked, tmp_path
):
    Worker.objects.all().delete()  # only the chat processes run
    env = {
        **subprocess_env,
        "VIBE_SLACK_APP_TOKEN": APP_TOKEN,
        "VIBE_SLACK_API_URL": standin.api_url,
        "VIBE_SLACK_TEAM_IDS": doors.SLACK_TEAM,
    }
    log = tmp_path / "factory.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "manage.py"), "runfactory", "--no-web"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            connected = standin.connected.wait(30)
            ack = standin.ack(standin.command("status", VIEWER), timeout=10)[0] if connected else {}
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(60)
    output = log.read_text()
    assert connected, output
    assert "Vibe status" in ack["payload"]["text"], output
    assert code == 0, output
    assert "slacksocket: connected" in output and "slacksocket: stopped" in output


def test_the_socket_mode_manifest_is_the_http_one_without_urls():
    folder = REPO_ROOT / "chatops_app"
    http = json.loads((folder / "slack_app_manifest.json").read_text())
    socket = json.loads((folder / "slack_app_manifest_socket.json").read_text())

    assert socket["settings"]["socket_mode_enabled"] is True
    assert socket["settings"]["interactivity"] == {"is_enabled": True}  # no request URL
    (command,) = socket["features"]["slash_commands"]
    assert "url" not in command
    (http_command,) = http["features"]["slash_commands"]
    assert {**command, "url": http_command["url"]} == http_command
    assert socket["oauth_config"] == http["oauth_config"]  # no scope more than over HTTP
    assert "submit <lane> <goal>" in command["usage_hint"]
