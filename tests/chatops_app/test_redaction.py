"""Secrets in agent output never reach chat: not in a reply, not in a notification.

The task here failed with an Anthropic key in its error text and has a history note quoting a
database password, as an agent that printed its environment would leave them.
"""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chatops_app.discord.render import notification_message as discord_message
from chatops_app.models import ChatLink, Notification
from chatops_app.redact import REDACTED, redact
from chatops_app.slack.render import notification_message as slack_message
from tasks_app import lifecycle
from tasks_app.choices import NotificationEvent
from tasks_app.models import Task
from tests.chatops_app import doors

ANTHROPIC_KEY = "sk-ant-api03-" + "Zx9" * 30 + "-AAAA"
PASSWORD = "hunter2-Correct-Horse"
ERROR = f"anthropic.AuthenticationError: invalid x-api-key {ANTHROPIC_KEY} (status 401)"
NOTE = f"released: the agent printed DATABASE_URL with password={PASSWORD} and stopped"


@pytest.fixture(autouse=True)
def key(settings) -> Ed25519PrivateKey:
    settings.VIBE_SLACK_SIGNING_SECRET = doors.SLACK_SECRET
    private = Ed25519PrivateKey.generate()
    settings.VIBE_DISCORD_PUBLIC_KEY = doors.public_hex(private)
    return private


@pytest.fixture
def leaky(worker) -> Task:
    """A dead-letter task whose error holds a key and whose history holds a password."""
    task = lifecycle.submit("rotate the api keys", lane=worker.lane, actor="cli", max_attempts=1)
    claimed = lifecycle.claim_next(worker)
    lifecycle.release(task.pk, worker_id=worker.pk, token=claimed.claim_token, note=NOTE)
    claimed = lifecycle.claim_next(worker)
    lifecycle.fail(
        task.pk,
        worker_id=worker.pk,
        token=claimed.claim_token,
        error_type="agent_exit",
        error=ERROR,
    )
    task = Task.objects.get(pk=task.pk)
    assert ANTHROPIC_KEY in task.last_error and task.history.filter(note=NOTE).exists()
    return task


@pytest.fixture
def reader(viewer) -> None:
    ChatLink.objects.create(platform="slack", external_id="U0VERA", user=viewer)
    ChatLink.objects.create(platform="discord", external_id="4242", user=viewer)


def _assert_clean(text: str) -> None:
    assert ANTHROPIC_KEY not in text
    assert "sk-ant-api03" not in text
    assert PASSWORD not in text
    assert "redacted" in text


def test_a_slack_task_reply_is_redacted(client, leaky, reader):
    response = doors.slack_command(client, f"task {leaky.pk}", "U0VERA")
    text = doors.answer_text(response)
    _assert_clean(text)
    assert "invalid x-api-key [redacted]" in text
    assert "password=[redacted]" in text


def test_a_discord_task_reply_is_redacted(client, key, leaky, reader):
    response = doors.discord_command(client, key, "task", leaky.pk, user_id="4242")
    content = response.json()["data"]["content"]
    _assert_clean(content)
    assert "password=\\[redacted\\]" in content  # Discord's escaping of the brackets


def test_the_cli_still_shows_the_operator_everything(leaky):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("vibe", "task", str(leaky.pk), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["last_error"] == ERROR
    assert NOTE in [h["note"] for h in data["history"]]


def test_notifications_are_redacted_on_both_platforms(leaky):
    row = Notification.objects.get(task=leaky, channel="slack", event=NotificationEvent.DEAD_LETTER)
    # The "Why" of a notification can quote the agent too (a blocked task's reason).
    row.note = f"blocked: {NOTE}"
    for message in (slack_message(row), discord_message(row)):
        raw = json.dumps(message)
        _assert_clean(raw)
        assert "AuthenticationError" in raw and "invalid x" in raw  # the error still shows


def test_long_agent_output_is_trimmed_after_redaction(client, worker, reader):
    task = lifecycle.submit("noisy", lane=worker.lane, actor="cli", max_attempts=1)
    claimed = lifecycle.claim_next(worker)
    # The key sits where a naive cut at 300 characters would split it in half.
    error = "x" * 280 + " " + ANTHROPIC_KEY + " " + "y" * 5000
    lifecycle.fail(
        task.pk,
        worker_id=worker.pk,
        token=claimed.claim_token,
        error_type="agent_exit",
        error=error,
    )
    text = doors.answer_text(doors.slack_command(client, f"task {task.pk}", "U0VERA"))
    assert "sk-ant" not in text and "Zx9Zx9" not in text
    assert "y" * 400 not in text


@pytest.mark.parametrize(
    "secret, shown",
    [
        ("sk-ant-api03-abcDEF123_-xyz", "[redacted]"),
        ("sk-proj-abcdefghijklmnopqrstuv", "[redacted]"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[redacted]"),
        ("gho_abcdefghijklmnopqrstuvwxyz0123456789", "[redacted]"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijkl", "[redacted]"),
        ("xoxb-1234567890-0987654321-AbCdEfGhIjKl", "[redacted]"),
        ("xoxp-1234-5678-abcd", "[redacted]"),
        ("AKIAIOSFODNN7EXAMPLE", "[redacted]"),
        ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "[redacted]"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "Authorization: Bearer [redacted]"),
        ("password=hunter2&user=bob", "password=[redacted]&user=bob"),
        ("passwd: swordfish", "passwd: [redacted]"),
        ('{"api_key": "abc 123", "ok": true}', '{"api_key": "[redacted]", "ok": true}'),
        ("SECRET_KEY='django-insecure-x'", "SECRET_KEY='[redacted]'"),
        ("export GITHUB_TOKEN=abc123; make", "export GITHUB_TOKEN=[redacted]; make"),
        (
            "https://alice:s3cr3t@git.example.com/r.git",
            "https://alice:[redacted]@git.example.com/r.git",
        ),
        (
            "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\nAAKCAQEA\n"
            "-----END RSA PRIVATE KEY-----\n",
            "key:\n[redacted]",
        ),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkt", "[redacted]"),
    ],
)
def test_redact_replaces_secret_shapes(secret, shown):
    assert redact(secret).strip() == shown.strip()
    assert redact(redact(secret)) == redact(secret)


@pytest.mark.parametrize(
    "harmless",
    [
        "input_tokens: 1200, output_tokens=56",
        "task-management on a disk-based queue with sk-learn",
        "author: Bob; the secret to it is patience",
        "see https://example.com/a?page=2 at 12:30",
        "Bearer tokens expire",
    ],
)
def test_redact_leaves_ordinary_text_alone(harmless):
    assert redact(harmless) == harmless
    assert REDACTED not in redact(harmless)


def test_redact_stays_fast_on_hostile_output():
    for blob in (
        "token" * 40_000,
        "a=b=" * 50_000,
        "sk-" + "a-" * 50_000,
        "x" * 39 + "password" * 20_000,
    ):
        started = time.monotonic()
        redact(blob)
        assert time.monotonic() - started < 1.0, blob[:20]
