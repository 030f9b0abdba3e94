"""GitHub's webhook endpoint: thin; the checks and the work are in `webhook`.

`csrf_exempt` only because the signature replaces CSRF here: GitHub cannot hold a CSRF token,
and an unsigned or wrongly signed request is refused with a bare 401 before its body is read.
Without VIBE_GITHUB_WEBHOOK_SECRET every request is refused with 503 and a message saying so,
which GitHub shows in the hook's delivery log: the person setting it up sees what is missing,
and nothing unsigned is ever acted on.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chatops_app.signing import SignatureError

from . import webhook
from .github import NotConfigured

logger = logging.getLogger(__name__)


def _text(text: str, status: int = 200) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


@csrf_exempt
@require_POST
def github_webhook(request: HttpRequest) -> HttpResponse:
    secret = settings.VIBE_GITHUB_WEBHOOK_SECRET
    if not secret:
        logger.warning("GitHub webhook called but VIBE_GITHUB_WEBHOOK_SECRET is not set")
        return _text("GitHub webhook is not configured: set VIBE_GITHUB_WEBHOOK_SECRET", 503)
    body = request.body
    try:
        webhook.verify_github(
            body, signature=request.headers.get("X-Hub-Signature-256"), secret=secret
        )
    except SignatureError as exc:
        logger.warning(
            "refused GitHub webhook from %s: %s", request.META.get("REMOTE_ADDR", "?"), exc
        )
        return _text("invalid request signature", 401)
    event = request.headers.get("X-GitHub-Event", "")
    delivery_id = request.headers.get("X-GitHub-Delivery", "")
    if not event or not delivery_id:
        return _text("missing X-GitHub-Event or X-GitHub-Delivery header", 400)
    try:
        payload = json.loads(body)
    except ValueError:
        return _text("the body is not JSON", 400)
    if not isinstance(payload, dict):
        return _text("the body is not a JSON object", 400)
    try:
        answer = webhook.receive(event, delivery_id, payload)
    except NotConfigured as exc:
        return _text(f"GitHub is not configured here: {exc}", 503)
    except Exception:  # a 500 tells GitHub nothing useful; the traceback is in our log
        logger.exception("GitHub webhook %s (%s) failed", delivery_id, event)
        return _text("Vibe Factory hit an internal error; it has been logged", 503)
    return _text(answer.text, answer.status)
