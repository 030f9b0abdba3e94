"""Discord interaction signatures (Ed25519 over timestamp + body), with a generated key pair and
RFC 8032's first test vector. Refused requests target a real task and must change nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.test import Client
from django.urls import reverse

from chatops_app.discord.signature import verify_discord
from chatops_app.models import ChatLink
from chatops_app.signing import SignatureError
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory

FIXTURES = Path(__file__).parent / "fixtures" / "discord"


def _public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


@pytest.fixture
def key(settings) -> Ed25519PrivateKey:
    private = Ed25519PrivateKey.generate()
    settings.VIBE_DISCORD_PUBLIC_KEY = _public_hex(private)
    return private


def _sign(key: Ed25519PrivateKey, body: bytes, timestamp: str | None = None) -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    return {
        "X-Signature-Ed25519": key.sign(ts.encode() + body).hex(),
        "X-Signature-Timestamp": ts,
    }


def _post(client: Client, body: bytes, headers: dict[str, str]):
    return client.post(
        reverse("chatops_app:discord_interactions"),
        data=body,
        content_type="application/json",
        headers=headers,
    )


@pytest.fixture
def waiting(approver, key) -> Task:
    """A task the linked approver would approve with a well-signed request."""
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    task = lifecycle.submit("risky migration", lane="backend", actor="cli", risk="high")
    task.history_before = task.history.count()
    return task


def _approve_body(task: Task) -> bytes:
    return json.dumps(
        {
            "id": "1",
            "type": 2,
            "token": "t",
            "member": {"user": {"id": "4242", "username": "alice"}},
            "data": {
                "name": "vibe",
                "options": [
                    {
                        "type": 1,
                        "name": "approve",
                        "options": [{"type": 4, "name": "id", "value": task.pk}],
                    }
                ],
            },
        }
    ).encode()


def _assert_untouched(task: Task) -> None:
    fresh = Task.objects.get(pk=task.pk)
    assert fresh.status == Status.AWAITING_APPROVAL
    assert fresh.history.count() == task.history_before
    assert not TaskHistory.objects.filter(actor__startswith="discord:").exists()


# --- The verifier on its own ------------------------------------------------------------------


def test_rfc8032_test1_vector():
    vector = json.loads((FIXTURES / "ed25519_rfc8032_test1.json").read_text())
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["secret_key_seed"]))
    assert _public_hex(private) == vector["public_key"]
    assert private.sign(bytes.fromhex(vector["message_hex"])).hex() == vector["signature"]
    # Discord signs timestamp + body; the vector's empty message is that with both empty, which
    # the door refuses as a missing header, so check the same key on a real request shape.
    body = b'{"type":1}'
    signature = private.sign(b"1700000000" + body).hex()
    then = lambda: 1700000000.0  # noqa: E731 - the moment the request was signed
    verify_discord(
        body,
        timestamp="1700000000",
        signature=signature,
        public_key=vector["public_key"],
        clock=then,
    )
    with pytest.raises(SignatureError):
        verify_discord(
            body + b" ",
            timestamp="1700000000",
            signature=signature,
            public_key=vector["public_key"],
            clock=then,
        )


@pytest.mark.parametrize(
    ("public_key", "signature", "reason"),
    [
        ("", "00" * 64, "not set"),
        ("zz" * 32, "00" * 64, "not hexadecimal"),
        ("00" * 31, "00" * 64, "31 bytes"),
        (None, "not-hex", "not hexadecimal"),
        (None, "00" * 63, "63 bytes"),
        (None, "00" * 64, "does not match"),
    ],
)
def test_malformed_keys_and_signatures_are_refused(public_key, signature, reason):
    if public_key is None:
        public_key = _public_hex(Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError, match=reason):
        verify_discord(
            b"{}", timestamp="1", signature=signature, public_key=public_key, clock=lambda: 1.0
        )


# --- Through the endpoint ---------------------------------------------------------------------


def test_ping_gets_pong(client, key):
    body = (FIXTURES / "ping_djs.json").read_bytes()
    response = _post(client, body, _sign(key, body))
    assert response.status_code == 200
    expected = json.loads((FIXTURES / "interaction_responses_discord_docs.json").read_text())
    assert response.json() == expected["pong"]


def test_signed_command_from_linked_approver_is_run(waiting, key):
    client = Client(enforce_csrf_checks=True)  # the signature replaces CSRF
    body = _approve_body(waiting)
    response = _post(client, body, _sign(key, body))
    assert response.status_code == 200
    waiting.refresh_from_db()
    assert waiting.status == Status.PENDING
    assert waiting.history.last().actor == "discord:4242"


def test_tampered_body_is_refused(client, waiting, key):
    body = _approve_body(waiting)
    headers = _sign(key, b'{"type":1}')
    assert _post(client, body, headers).status_code == 401
    headers = _sign(key, body)
    headers["X-Signature-Timestamp"] = str(int(headers["X-Signature-Timestamp"]) + 1)
    assert _post(client, body, headers).status_code == 401
    _assert_untouched(waiting)


def test_wrong_key_is_refused(client, waiting, key):
    body = _approve_body(waiting)
    response = _post(client, body, _sign(Ed25519PrivateKey.generate(), body))
    assert response.status_code == 401
    _assert_untouched(waiting)


@pytest.mark.parametrize("drop", ["X-Signature-Ed25519", "X-Signature-Timestamp", "both"])
def test_missing_headers_are_refused(client, waiting, key, drop):
    body = _approve_body(waiting)
    headers = {k: v for k, v in _sign(key, body).items() if drop not in (k, "both")}
    assert _post(client, body, headers).status_code == 401
    _assert_untouched(waiting)


def test_garbage_signature_header_is_a_401_not_a_500(client, waiting, key):
    body = _approve_body(waiting)
    headers = _sign(key, body)
    headers["X-Signature-Ed25519"] = "ünïcode"
    assert _post(client, body, headers).status_code == 401
    _assert_untouched(waiting)


def test_unconfigured_key_refuses_every_request(client, waiting, key, settings):
    settings.VIBE_DISCORD_PUBLIC_KEY = ""
    body = _approve_body(waiting)
    assert _post(client, body, _sign(key, body)).status_code == 401
    _assert_untouched(waiting)


def test_signed_body_that_is_not_json_is_a_400(client, key):
    body = b"not json at all"
    response = _post(client, body, _sign(key, body))
    assert response.status_code == 400
    assert "not a JSON interaction" in response.json()["error"]


def test_get_is_not_allowed(client, key):
    assert client.get(reverse("chatops_app:discord_interactions")).status_code == 405
