"""Slack request signatures: the published example, and every way a request can be wrong.

Each refused request targets a real dead-letter task with a command that would retry it, so
"no side effect" is checked on the task and its history, not assumed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from chatops_app.models import ChatLink
from chatops_app.signing import SignatureError
from chatops_app.slack.signature import slack_signature, verify_slack
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from workers_app.models import Worker

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
SECRET = "test-slack-signing-secret"
SLACK_USER = "U0APPROVER"


def _vector() -> dict:
    return json.loads((FIXTURES / "signing_vector_slack_docs.json").read_text())


def _dead_letter_task(goal: str = "build the login page") -> Task:
    task = lifecycle.submit(goal, lane="backend", actor="cli", max_attempts=1)
    worker = Worker.objects.create(worker_id="@chat-test", lane="backend", capacity_limit=2)
    claimed = lifecycle.claim_next(worker)
    assert claimed is not None and claimed.pk == task.pk
    lifecycle.fail(task.pk, worker_id=worker.pk, token=claimed.claim_token, error_type="agent_exit")
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    task.history_before = TaskHistory.objects.filter(task=task).count()
    return task


@pytest.fixture(autouse=True)
def slack_secret(settings) -> str:
    settings.VIBE_SLACK_SIGNING_SECRET = SECRET
    return SECRET


@pytest.fixture
def target(approver, slack_secret) -> Task:
    """A dead-letter task an approver linked to SLACK_USER could retry with a good request."""
    ChatLink.objects.create(platform="slack", external_id=SLACK_USER, user=approver)
    return _dead_letter_task()


def _retry_body(task: Task) -> bytes:
    return f"command=%2Fvibe&text=retry+{task.pk}&user_id={SLACK_USER}&team_id=T1".encode()


def _post(client: Client, body: bytes, headers: dict[str, str]):
    return client.post(
        reverse("chatops_app:slack_commands"),
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers=headers,
    )


def _headers(body: bytes, *, secret: str = SECRET, timestamp: str | None = None) -> dict:
    ts = str(int(time.time())) if timestamp is None else timestamp
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": slack_signature(body, ts, secret),
    }


def _assert_untouched(task: Task) -> None:
    fresh = Task.objects.get(pk=task.pk)
    assert fresh.status == Status.DEAD_LETTER
    assert fresh.attempt_count == task.attempt_count
    assert fresh.updated_at == task.updated_at
    assert TaskHistory.objects.filter(task=task).count() == task.history_before
    assert not TaskHistory.objects.filter(actor__startswith="slack:").exists()


# --- The verifier on its own ------------------------------------------------------------------


def test_slack_published_example_verifies_with_a_fixed_clock():
    vector = _vector()
    body = vector["raw_body"].encode()
    assert (
        slack_signature(body, vector["x_slack_request_timestamp"], vector["signing_secret"])
        == vector["x_slack_signature"]
    )
    verify_slack(
        body,
        timestamp=vector["x_slack_request_timestamp"],
        signature=vector["x_slack_signature"],
        secret=vector["signing_secret"],
        clock=lambda: vector["clock_now_for_valid_check"],
    )


def test_slack_published_example_is_refused_once_stale():
    vector = _vector()
    with pytest.raises(SignatureError, match="300"):
        verify_slack(
            vector["raw_body"].encode(),
            timestamp=vector["x_slack_request_timestamp"],
            signature=vector["x_slack_signature"],
            secret=vector["signing_secret"],
            clock=lambda: vector["clock_now_for_valid_check"] + 301,
        )


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_slack_window_accepts_five_minutes_either_way(offset):
    body = b"text=status"
    sig = slack_signature(body, "1000000", SECRET)
    verify_slack(
        body, timestamp="1000000", signature=sig, secret=SECRET, clock=lambda: 1e6 + offset
    )


@pytest.mark.parametrize("offset", [-301, 301])
def test_slack_window_refuses_beyond_five_minutes(offset):
    body = b"text=status"
    sig = slack_signature(body, "1000000", SECRET)
    with pytest.raises(SignatureError):
        verify_slack(
            body, timestamp="1000000", signature=sig, secret=SECRET, clock=lambda: 1e6 + offset
        )


@pytest.mark.parametrize("timestamp", ["", "abc", "12.5", "-5", "١٢٣", " 1000000", "1e6"])
def test_slack_non_numeric_timestamp_is_refused(timestamp):
    with pytest.raises(SignatureError):
        verify_slack(b"x", timestamp=timestamp, signature="v0=00", secret=SECRET, clock=lambda: 1e6)


def test_slack_without_a_configured_secret_refuses_even_a_matching_signature():
    sig = slack_signature(b"x", "1000000", "")
    with pytest.raises(SignatureError, match="not set"):
        verify_slack(b"x", timestamp="1000000", signature=sig, secret="", clock=lambda: 1e6)


# --- Through the endpoint: the right status and no side effect --------------------------------


def test_signed_retry_from_linked_approver_is_run(client, target):
    body = _retry_body(target)
    response = _post(client, body, _headers(body))
    assert response.status_code == 200
    target.refresh_from_db()
    assert target.status == Status.PENDING
    assert TaskHistory.objects.filter(task=target, actor=f"slack:{SLACK_USER}").count() == 1


def test_csrf_is_replaced_by_the_signature(target):
    client = Client(enforce_csrf_checks=True)
    body = _retry_body(target)
    assert _post(client, body, _headers(body)).status_code == 200


def test_tampered_body_is_refused(client, target):
    signed = f"text=task+{target.pk}&user_id={SLACK_USER}".encode()
    response = _post(client, _retry_body(target), _headers(signed))
    assert response.status_code == 401
    _assert_untouched(target)


def test_wrong_secret_is_refused(client, target):
    body = _retry_body(target)
    response = _post(client, body, _headers(body, secret="someone-elses-secret"))
    assert response.status_code == 401
    _assert_untouched(target)


@pytest.mark.parametrize("drop", ["X-Slack-Request-Timestamp", "X-Slack-Signature", "both"])
def test_missing_headers_are_refused(client, target, drop):
    body = _retry_body(target)
    headers = _headers(body)
    for name in list(headers):
        if drop in (name, "both"):
            del headers[name]
    response = _post(client, body, headers)
    assert response.status_code == 401
    _assert_untouched(target)


@pytest.mark.parametrize("age", [301, 3600, -301, -86400])
def test_stale_and_future_timestamps_are_refused(client, target, age):
    body = _retry_body(target)
    # Rounded away from now, so the stamp stays more than 300 s off by the time it is checked.
    then = time.time() - age
    stamp = math.floor(then) if age > 0 else math.ceil(then)
    response = _post(client, body, _headers(body, timestamp=str(stamp)))
    assert response.status_code == 401
    _assert_untouched(target)


@pytest.mark.parametrize("timestamp", ["soon", "1.7e9", "NaN", "0x10"])
def test_non_numeric_timestamp_is_refused_not_a_server_error(client, target, timestamp):
    body = _retry_body(target)
    headers = {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(body, timestamp, SECRET),
    }
    response = _post(client, body, headers)
    assert response.status_code == 401
    _assert_untouched(target)


def test_malformed_signature_is_refused(client, target):
    body = _retry_body(target)
    headers = _headers(body)
    headers["X-Slack-Signature"] = headers["X-Slack-Signature"].replace("v0=", "v1=")
    assert _post(client, body, headers).status_code == 401
    headers["X-Slack-Signature"] = "v0=ünïcode"
    assert _post(client, body, headers).status_code == 401
    _assert_untouched(target)


def test_ssl_check_field_does_not_bypass_verification(client, target):
    """bolt-python's regression body: ssl_check=1, signature v0=invalid, timestamp 0."""
    body = (FIXTURES / "ssl_check_bypass_attempt_bolt.form").read_bytes().strip()
    # Make the smuggled command one that would change something if it ran.
    body = body.replace(b"user_id=W111", f"user_id={SLACK_USER}".encode())
    body = body.replace(b"text=Hi", f"text=retry+{target.pk}".encode())
    headers = {"X-Slack-Request-Timestamp": "0", "X-Slack-Signature": "v0=invalid"}
    response = _post(client, body, headers)
    assert response.status_code == 401
    assert b"retry" not in response.content
    _assert_untouched(target)


@pytest.mark.parametrize("secret", ["", "   "])
def test_unconfigured_secret_refuses_every_request(client, target, settings, secret):
    settings.VIBE_SLACK_SIGNING_SECRET = secret
    body = _retry_body(target)
    response = _post(client, body, _headers(body, secret=secret))
    assert response.status_code == 401
    _assert_untouched(target)


def test_interactions_endpoint_checks_the_same_signature(client, target):
    payload = {
        "type": "block_actions",
        "user": {"id": SLACK_USER},
        "actions": [{"action_id": "vibe_retry", "value": str(target.pk), "type": "button"}],
    }
    from urllib.parse import quote

    body = f"payload={quote(json.dumps(payload))}".encode()
    url = reverse("chatops_app:slack_interactions")
    for headers in (
        _headers(body, secret="wrong"),
        {"X-Slack-Request-Timestamp": "0", "X-Slack-Signature": "v0=invalid"},
        {},
    ):
        response = client.post(
            url, data=body, content_type="application/x-www-form-urlencoded", headers=headers
        )
        assert response.status_code == 401
    _assert_untouched(target)


def test_get_is_not_allowed(client, slack_secret):
    assert client.get(reverse("chatops_app:slack_commands")).status_code == 405
