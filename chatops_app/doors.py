"""What every chat door does before it hands a request to the grammar: refuse with a reason in
the log, spot a replayed request, and say something useful when our side broke.

`csrf_exempt` on the doors' views only because the signature check replaces CSRF there: the chat
service cannot hold a CSRF token, and an unsigned or wrongly signed request is refused with a bare
401 before anything in its body is read, so it can change nothing. A verified request from another
Slack workspace or Discord server (see `binding.py`) gets a bare 403 and changes nothing either.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse

from .models import first_sighting
from .signing import MAX_AGE_SECONDS, SignatureError

logger = logging.getLogger(__name__)

REPLAY_TEXT = "This request was already handled; nothing was done again."
TROUBLE_TEXT = "Vibe Factory hit an internal error answering this; it has been logged."


def _refused(door: str, request: HttpRequest, reason: object) -> None:
    logger.warning(
        "refused %s request to %s from %s: %s",
        door,
        request.path,
        request.META.get("REMOTE_ADDR", "?"),
        reason,
    )


def unauthorized(door: str, request: HttpRequest, reason: SignatureError) -> HttpResponse:
    """Not provably from the chat service: a bare 401, the reason only in our log."""
    _refused(door, request, reason)
    return HttpResponse("invalid request signature", status=401, content_type="text/plain")


def forbidden(door: str, request: HttpRequest, reason: str) -> HttpResponse:
    """A signed request that is not from our workspace or server: refused, logged, no effect."""
    _refused(door, request, reason)
    return HttpResponse("this workspace is not allowed here", status=403, content_type="text/plain")


def trouble(door: str) -> str:
    """What a person sees when something on our side broke; the traceback goes to the log."""
    logger.exception("%s request failed", door)
    return TROUBLE_TEXT


def replayed(door: str, request: HttpRequest, header: str) -> bool:
    """A verified request seen before (within the signing window): it must change nothing."""
    if first_sighting(door, request.headers.get(header, ""), window_seconds=MAX_AGE_SECONDS):
        return False
    logger.warning(
        "ignored a replayed %s request to %s from %s",
        door,
        request.path,
        request.META.get("REMOTE_ADDR", "?"),
    )
    return True
