"""Slack and Discord endpoints: verify the signature on the raw body, then hand over.

`csrf_exempt` only because the signature check replaces CSRF here: the chat service cannot hold
a CSRF token, and an unsigned or wrongly signed request is refused with a bare 401 before
anything in its body is read, so it can change nothing. A verified request from another Slack
workspace or Discord server (see `binding.py`) gets a bare 403 and changes nothing either.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import binding, discord, slack
from .models import first_sighting
from .signatures import SLACK_MAX_AGE_SECONDS, SignatureError, verify_discord, verify_slack

logger = logging.getLogger(__name__)


def _unauthorized(door: str, request: HttpRequest, reason: SignatureError) -> HttpResponse:
    logger.warning(
        "refused %s request to %s from %s: %s",
        door,
        request.path,
        request.META.get("REMOTE_ADDR", "?"),
        reason,
    )
    return HttpResponse("invalid request signature", status=401, content_type="text/plain")


def _forbidden(door: str, request: HttpRequest, reason: str) -> HttpResponse:
    """A signed request that is not from our workspace or server: refused, logged, no effect."""
    logger.warning(
        "refused %s request to %s from %s: %s",
        door,
        request.path,
        request.META.get("REMOTE_ADDR", "?"),
        reason,
    )
    return HttpResponse("this workspace is not allowed here", status=403, content_type="text/plain")


def _trouble(door: str) -> dict:
    """What a person sees when something on our side broke; the traceback is in the log."""
    logger.exception("%s request failed", door)
    return {"message": "Vibe Factory hit an internal error answering this; it has been logged."}


REPLAY_TEXT = "This request was already handled; nothing was done again."


def _verified_slack_body(request: HttpRequest) -> bytes:
    """The raw body, once its Slack signature checks out (raises SignatureError otherwise)."""
    body = request.body
    verify_slack(
        body,
        timestamp=request.headers.get("X-Slack-Request-Timestamp"),
        signature=request.headers.get("X-Slack-Signature"),
        secret=settings.VIBE_SLACK_SIGNING_SECRET,
    )
    return body


def _replayed(door: str, request: HttpRequest, header: str) -> bool:
    """A verified request seen before (within the signing window): it must change nothing."""
    if first_sighting(door, request.headers.get(header, ""), window_seconds=SLACK_MAX_AGE_SECONDS):
        return False
    logger.warning(
        "ignored a replayed %s request to %s from %s",
        door,
        request.path,
        request.META.get("REMOTE_ADDR", "?"),
    )
    return True


@csrf_exempt
@require_POST
def slack_commands(request: HttpRequest) -> HttpResponse:
    """The `/vibe` slash command."""
    try:
        body = _verified_slack_body(request)
    except SignatureError as exc:
        return _unauthorized("Slack", request, exc)
    if _replayed("slack", request, "X-Slack-Signature"):
        return JsonResponse({"response_type": "ephemeral", "text": REPLAY_TEXT})
    form = slack.parse_form(body)
    refusal = binding.slack_command_refusal(form)
    if refusal:
        return _forbidden("Slack", request, refusal)
    try:
        return JsonResponse(slack.handle_command(form))
    except Exception:  # a 500 would show Slack's opaque "dispatch_failed" instead
        text = _trouble("Slack")["message"]
        return JsonResponse({"response_type": "ephemeral", "text": text})


@csrf_exempt
@require_POST
def slack_interactions(request: HttpRequest) -> HttpResponse:
    """Button clicks (`block_actions`): acknowledged at once, the message updated afterwards."""
    try:
        body = _verified_slack_body(request)
    except SignatureError as exc:
        return _unauthorized("Slack", request, exc)
    if _replayed("slack", request, "X-Slack-Signature"):
        return HttpResponse(status=200)
    payload = slack.parse_interaction(body)
    if payload is None:
        logger.warning("Slack interaction without a readable payload; ignored")
        return HttpResponse(status=200)
    refusal = binding.slack_interaction_refusal(payload)
    if refusal:
        return _forbidden("Slack", request, refusal)
    try:
        slack.handle_interaction(payload)
    except Exception:  # Slack would retry a 500; the click is answered either way
        _trouble("Slack")
    return HttpResponse(status=200)


@csrf_exempt
@require_POST
def discord_interactions(request: HttpRequest) -> HttpResponse:
    """Every Discord interaction: PING, the `/vibe` command and button clicks."""
    body = request.body
    try:
        verify_discord(
            body,
            timestamp=request.headers.get("X-Signature-Timestamp"),
            signature=request.headers.get("X-Signature-Ed25519"),
            public_key=settings.VIBE_DISCORD_PUBLIC_KEY,
        )
    except SignatureError as exc:
        return _unauthorized("Discord", request, exc)
    try:
        interaction = json.loads(body)
    except ValueError:
        interaction = None
    if not isinstance(interaction, dict):
        return JsonResponse({"error": "the body is not a JSON interaction"}, status=400)
    if interaction.get("type") != discord.PING and _replayed(
        "discord", request, "X-Signature-Ed25519"
    ):
        return JsonResponse(
            {
                "type": discord.CHANNEL_MESSAGE,
                "data": {
                    "content": REPLAY_TEXT,
                    "allowed_mentions": discord.NO_MENTIONS,
                    "flags": discord.EPHEMERAL,
                },
            }
        )
    # A PING proves the endpoint to Discord: it carries no guild and changes nothing.
    if interaction.get("type") != discord.PING:
        refusal = binding.discord_refusal(interaction)
        if refusal:
            return _forbidden("Discord", request, refusal)
    try:
        return JsonResponse(discord.handle(interaction))
    except Exception:  # Discord shows "interaction failed" for a 500; say something useful
        text = _trouble("Discord")["message"]
        return JsonResponse(
            {
                "type": discord.CHANNEL_MESSAGE,
                "data": {
                    "content": text,
                    "allowed_mentions": discord.NO_MENTIONS,
                    "flags": discord.EPHEMERAL,
                },
            }
        )
