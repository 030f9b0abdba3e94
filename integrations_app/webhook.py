"""GitHub's webhook: verify the signature on the raw body, drop replays, record, handle.

GitHub signs each delivery with HMAC-SHA256 of the raw body under the webhook's secret
(`X-Hub-Signature-256: sha256=<hex>`). It is checked, in constant time, before anything in the
body is parsed. Each delivery's `X-GitHub-Delivery` id is stored once, so a replay of a captured
request (or GitHub's "Redeliver") changes nothing; the event it carries is then recorded under
its own key, shared with the poller, and handled at once. Handling calls GitHub with a short
timeout and never sleeps through a rate limit inside the request: if GitHub cannot answer now,
the event stays pending and the sync loop finishes it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from chatops_app.signing import SignatureError

from . import events
from .github import GitHub
from .models import EventSource, WebhookDelivery

logger = logging.getLogger(__name__)

# GitHub gives up on a delivery after 10 s; stay well inside it.
WEB_TIMEOUT_SECONDS = 4.0


def github_signature(body: bytes, secret: str) -> str:
    """`sha256=<hex>`: what GitHub puts in X-Hub-Signature-256 for this body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(body: bytes, *, signature: str | None, secret: str) -> None:
    """Raise SignatureError unless `signature` is GitHub's HMAC of `body` under `secret`."""
    if not secret:
        raise SignatureError("VIBE_GITHUB_WEBHOOK_SECRET is not set; refusing every request")
    if not signature:
        raise SignatureError("missing X-Hub-Signature-256 header")
    expected = github_signature(body, secret)
    if not signature.isascii() or not hmac.compare_digest(expected, signature):
        raise SignatureError("X-Hub-Signature-256 does not match the body")


@dataclass
class Answer:
    status: int
    text: str


def receive(event: str, delivery_id: str, payload: dict, *, client: GitHub | None = None) -> Answer:
    """Act on one verified delivery; the answer is shown in GitHub's delivery log."""
    if event == "ping":
        return Answer(200, "pong")
    client = client or GitHub(timeout=WEB_TIMEOUT_SECONDS, max_wait=0)
    action = str(payload.get("action") or "")[:60]
    with transaction.atomic():
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    delivery_id=delivery_id[:100], event=event[:60], action=action
                )
        except IntegrityError:
            return Answer(200, "duplicate: this delivery was received before")
        found = events.from_webhook(event, payload, client.repo)
        if isinstance(found, str):
            WebhookDelivery.objects.filter(pk=delivery.pk).update(outcome=found[:2000])
            return Answer(200, found)
        row = events.record(found, source=EventSource.WEBHOOK)
        if row is None:
            text = f"duplicate: {found.key} was handled already"
            WebhookDelivery.objects.filter(pk=delivery.pk).update(outcome=text)
            return Answer(200, text)
    # Committed: the event is safe whatever happens next. Handle it now if GitHub lets us.
    text = events.handle(row, client)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(outcome=text[:2000])
    return Answer(202 if text.startswith("will retry") else 200, text)
