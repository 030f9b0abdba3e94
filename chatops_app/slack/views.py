"""Slack's doors: the `/vibe` slash command and button clicks, over HTTP (and, through
`socket.py`, over Socket Mode): verify the signature on the raw body, then hand over to the
grammar as the linked person.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from urllib.parse import parse_qs

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from tasks_app import actors

from .. import binding, doors, grammar, models
from ..binding import slack_workspace
from ..models import Platform, reply_to_click
from ..replies import Reply
from ..signing import SignatureError
from . import render
from .signature import verify_slack

logger = logging.getLogger(__name__)

DOOR = "slack"


def parse_form(body: bytes) -> dict[str, str]:
    """A verified url-encoded body as a dict of first values (Slack never repeats a key)."""
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def parse_interaction(body: bytes) -> dict | None:
    """The JSON `payload` field of a verified interaction body, or None when it is malformed."""
    raw = parse_form(body).get("payload")
    if not raw:
        return None
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def linked_user(external_id: str, workspace: str = ""):
    """The active Django user a Slack user id in team `workspace` is linked to, or None."""
    return models.linked_user(Platform.SLACK, external_id, workspace)


def handle_command(form: Mapping[str, str]) -> dict:
    """`/vibe <text>` from a verified request, as the JSON to answer with."""
    slack_user = form.get("user_id", "")
    reply = grammar.execute(
        form.get("text", ""),
        user=linked_user(slack_user, slack_workspace(form)),
        actor=actors.slack(slack_user or "unknown"),
        door=DOOR,
    )
    return render.render(reply)


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _clicked_by(payload: Mapping) -> str:
    user = _dict(payload.get("user"))
    return str(user.get("username") or user.get("name") or user.get("id") or "someone")


def _our_clicks(payload: Mapping) -> list[tuple[str, str]]:
    """(action, task id text) of each of our buttons in a `block_actions` payload."""
    clicks = payload.get("actions")
    ours = (
        render.parse_action(str(action.get("action_id", "")), str(action.get("value", "")))
        for action in (clicks if isinstance(clicks, list) else [])
        if isinstance(action, dict)
    )
    return [click for click in ours if click is not None]


def handle_interaction(payload: Mapping) -> list[Reply]:
    """Run our buttons in a verified `block_actions` payload; answer through its response_url.

    The HTTP answer to Slack is an empty 200 right away; the message update is a row in the
    outbox (`sendnotifications` posts it to the response_url), so a slow Slack never holds our
    answer past its 3 seconds and a Slack that is down only delays the update.
    """
    if payload.get("type") != "block_actions":
        return []
    slack_user = str(_dict(payload.get("user")).get("id") or "")
    user = linked_user(slack_user, slack_workspace(payload))
    who = _clicked_by(payload)
    url = payload.get("response_url")
    replies = []
    for action, task_id in _our_clicks(payload):
        reply = grammar.execute_button(
            action, task_id, user=user, actor=actors.slack(slack_user or "unknown"), door=DOOR
        )
        replies.append(reply)
        message = (
            render.clicked_message(_dict(payload.get("message")), reply, who)
            if reply.ok
            else render.refusal_message(reply)
        )
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            reply_to_click(url, message, task_id=task_id)
    return replies


def _admitted(request: HttpRequest, replay_answer: HttpResponse) -> bytes | HttpResponse:
    """The raw body once its Slack signature checks out and it is no replay; else the answer."""
    try:
        verify_slack(
            request.body,
            timestamp=request.headers.get("X-Slack-Request-Timestamp"),
            signature=request.headers.get("X-Slack-Signature"),
            secret=settings.VIBE_SLACK_SIGNING_SECRET,
        )
    except SignatureError as exc:
        return doors.unauthorized("Slack", request, exc)
    if doors.replayed(DOOR, request, "X-Slack-Signature"):
        return replay_answer
    return request.body


@csrf_exempt
@require_POST
def slack_commands(request: HttpRequest) -> HttpResponse:
    """The `/vibe` slash command."""
    body = _admitted(
        request, JsonResponse({"response_type": "ephemeral", "text": doors.REPLAY_TEXT})
    )
    if isinstance(body, HttpResponse):
        return body
    form = parse_form(body)
    refusal = binding.slack_command_refusal(form)
    if refusal:
        return doors.forbidden("Slack", request, refusal)
    try:
        return JsonResponse(handle_command(form))
    except Exception:  # a 500 would show Slack's opaque "dispatch_failed" instead
        return JsonResponse({"response_type": "ephemeral", "text": doors.trouble("Slack")})


@csrf_exempt
@require_POST
def slack_interactions(request: HttpRequest) -> HttpResponse:
    """Button clicks (`block_actions`): acknowledged at once, the message updated afterwards."""
    body = _admitted(request, HttpResponse(status=200))
    if isinstance(body, HttpResponse):
        return body
    payload = parse_interaction(body)
    if payload is None:
        logger.warning("Slack interaction without a readable payload; ignored")
        return HttpResponse(status=200)
    refusal = binding.slack_interaction_refusal(payload)
    if refusal:
        return doors.forbidden("Slack", request, refusal)
    try:
        handle_interaction(payload)
    except Exception:  # Slack would retry a 500; the click is answered either way
        doors.trouble("Slack")
    return HttpResponse(status=200)
