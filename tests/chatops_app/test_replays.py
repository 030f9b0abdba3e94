"""One side effect per signed request, and timestamps that are fresh and sane, on both doors.

Every request here is correctly signed: what is checked is that the same one twice changes
nothing the second time, and that no header value, however odd, gets a 500.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.urls import reverse

from chatops_app.doors import REPLAY_TEXT
from chatops_app.models import ChatLink, SignedRequest
from chatops_app.slack.signature import slack_signature
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import TaskHistory
from tests.chatops_app.factories import dead_letter_task

SLACK_SECRET = "test-slack-signing-secret"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def secrets(settings) -> Ed25519PrivateKey:
    settings.VIBE_SLACK_SIGNING_SECRET = SLACK_SECRET
    private = Ed25519PrivateKey.generate()
    settings.VIBE_DISCORD_PUBLIC_KEY = (
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    )
    return private


def slack(client, view: str, body: bytes, ts: str | None = None):
    ts = ts or str(int(time.time()))
    return client.post(
        reverse(view),
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(body, ts, SLACK_SECRET),
        },
    )


def discord(client, key: Ed25519PrivateKey, body: bytes, ts: str | None = None):
    ts = ts or str(int(time.time()))
    return client.post(
        reverse("chatops_app:discord_interactions"),
        data=body,
        content_type="application/json",
        headers={
            "X-Signature-Ed25519": key.sign(ts.encode() + body).hex(),
            "X-Signature-Timestamp": ts,
        },
    )


def test_a_replayed_slack_command_changes_nothing(client, approver, worker):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = dead_letter_task(worker)
    fields = {"command": "/vibe", "text": f"retry {task.pk}", "user_id": "U0ALICE", "team_id": "T"}
    body = urlencode(fields).encode()
    ts = str(int(time.time()))
    first = slack(client, "chatops_app:slack_commands", body, ts)
    assert "reset to pending" in json.dumps(first.json())
    # The task fails again; the captured request is sent once more, within the window.
    claimed = lifecycle.claim_next(worker)
    lifecycle.fail(task.pk, worker_id=worker.pk, token=claimed.claim_token, error_type="timeout")
    again = slack(client, "chatops_app:slack_commands", body, ts)
    assert again.status_code == 200 and again.json()["text"] == REPLAY_TEXT
    assert task.history.filter(actor="slack:U0ALICE").count() == 1
    assert task.__class__.objects.get(pk=task.pk).status == Status.DEAD_LETTER


def test_a_replayed_slack_click_changes_nothing(client, approver):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    payload = {
        "type": "block_actions",
        "user": {"id": "U0ALICE"},
        "team": {"id": "T1"},
        "actions": [{"action_id": "vibe_approve", "value": str(task.pk), "action_ts": "1.2"}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()))
    assert slack(client, "chatops_app:slack_interactions", body, ts).status_code == 200
    assert slack(client, "chatops_app:slack_interactions", body, ts).status_code == 200
    assert TaskHistory.objects.filter(task=task, actor="slack:U0ALICE").count() == 1
    assert SignedRequest.objects.filter(door="slack").count() == 1


def test_a_replayed_discord_interaction_changes_nothing(client, secrets, approver):
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    interaction = {
        "id": "555",
        "type": 2,
        "token": "t",
        "channel_id": "7",
        "member": {"user": {"id": "4242", "username": "alice"}},
        "guild_id": "1",
        "data": {
            "name": "vibe",
            "type": 1,
            "options": [
                {
                    "type": 1,
                    "name": "approve",
                    "options": [{"type": 4, "name": "id", "value": task.pk}],
                }
            ],
        },
    }
    body = json.dumps(interaction).encode()
    ts = str(int(time.time()))
    first = discord(client, secrets, body, ts).json()
    assert "approved" in first["data"]["content"]
    again = discord(client, secrets, body, ts).json()
    assert again["data"]["content"] == REPLAY_TEXT and again["data"]["flags"] == 64
    assert TaskHistory.objects.filter(task=task, actor="discord:4242").count() == 1


def test_discord_pings_are_always_answered(client, secrets):
    body, ts = b'{"type": 1}', str(int(time.time()))
    for _ in range(2):
        assert discord(client, secrets, body, ts).json() == {"type": 1}


HOSTILE_TIMESTAMPS = [
    str(int(time.time()) - 400),  # stale
    str(int(time.time()) + 400),  # from the future
    "1500000000",  # 2017
    "abc",
    "-5",
    "1" * 400,  # OverflowError once, in float arithmetic
    "1" * 5000,  # ValueError once, in int()
    "１７０００００００００",  # full-width digits: isdigit() says yes
]


@pytest.mark.parametrize("ts", HOSTILE_TIMESTAMPS)
def test_stale_and_absurd_timestamps_are_401_on_every_door(client, secrets, ts):
    body = urlencode({"command": "/vibe", "text": "status", "user_id": "U1"}).encode()
    for view in ("chatops_app:slack_commands", "chatops_app:slack_interactions"):
        response = slack(client, view, body, ts)
        assert response.status_code == 401, (view, ts[:20])
    response = discord(client, secrets, b'{"type": 1}', ts)
    assert response.status_code == 401, ts[:20]
    assert not SignedRequest.objects.exists()
