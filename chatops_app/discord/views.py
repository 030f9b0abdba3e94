"""Discord's door: every interaction (PING, the `/vibe` command, button clicks) at one URL:
verify the Ed25519 signature on the raw body, then hand over to the grammar as the linked person.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from tasks_app import actors

from .. import binding, doors, grammar, models
from ..binding import discord_workspace
from ..models import Platform
from ..signing import SignatureError
from . import render
from .api import SUB_COMMAND, VIBE_COMMAND
from .signature import verify_discord

DOOR = "discord"
COMMAND_NAME = "vibe"

# Interaction types (requests) and the callback types only this door sends, from Discord's docs.
PING = 1
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
PONG = 1
AUTOCOMPLETE_RESULT = 8


def _invoker(interaction: Mapping) -> tuple[str, str]:
    """(Discord user id, display name): `member.user` in a guild, `user` in a DM."""
    member = interaction.get("member")
    user = (member.get("user") if isinstance(member, dict) else None) or interaction.get("user")
    if not isinstance(user, dict):
        return "", "someone"
    user_id = str(user.get("id") or "")
    return user_id, str(user.get("global_name") or user.get("username") or user_id or "someone")


def linked_user(external_id: str, workspace: str = ""):
    """The active Django user a Discord user id in guild `workspace` is linked to, or None."""
    return models.linked_user(Platform.DISCORD, external_id, workspace)


def _defined_order(subcommand: str) -> list[str]:
    """The option names of one of our subcommands, in the order `api` registers them."""
    for option in VIBE_COMMAND["options"]:
        if option["name"] == subcommand:
            return [sub["name"] for sub in option.get("options", [])]
    return []


def _sub_words(subcommand: str, subs: list) -> list[str]:
    """A subcommand's option values as the grammar reads them: the first value, then the
    qualifiers (`key:…`, `risk:…`, `priority:…`), then the rest (a goal, a comment) as typed.

    Discord sends options in the order a person filled them in, not the registered order.
    """
    order = _defined_order(subcommand)
    given = sorted(
        (sub for sub in subs if isinstance(sub, dict) and "value" in sub),
        key=lambda sub: order.index(str(sub["name"])) if sub.get("name") in order else len(order),
    )
    plain = [sub for sub in given if sub.get("name") not in grammar.SUBMIT_OPTIONS]
    qualifiers = [
        f"{sub['name']}:{'_'.join(str(sub['value']).split())}"
        for sub in given
        if sub.get("name") in grammar.SUBMIT_OPTIONS
    ]
    values = [str(sub["value"]) for sub in plain]
    return values[:1] + qualifiers + values[1:]


def command_text(data: Mapping) -> str:
    """`/vibe retry id:42` → "retry 42": the subcommand's name, then its option values."""
    words: list[str] = []
    options = data.get("options")
    for option in options if isinstance(options, list) else []:
        if not isinstance(option, dict):
            continue
        if option.get("type") == SUB_COMMAND or "options" in option:
            name = str(option.get("name", ""))
            subs = option.get("options")
            words += [name, *_sub_words(name, subs if isinstance(subs, list) else [])]
        elif "value" in option:
            words.append(str(option["value"]))
    return " ".join(w for w in words if w)


def _command(interaction: Mapping, user_id: str) -> dict:
    data = interaction.get("data") or {}
    if not isinstance(data, dict) or data.get("name") != COMMAND_NAME:
        return render.render(grammar.help_reply(ok=False, prefix="That is not a Vibe command."))
    reply = grammar.execute(
        command_text(data),
        user=linked_user(user_id, discord_workspace(interaction)),
        actor=actors.discord(user_id or "unknown"),
        door=DOOR,
    )
    return render.render(reply)


def _clicked(interaction: Mapping, user_id: str, name: str) -> dict:
    data = interaction.get("data")
    data = data if isinstance(data, dict) else {}
    ours = render.parse_custom_id(str(data.get("custom_id", "")))
    if ours is None:
        return render.ephemeral("That button is not one of Vibe Factory's.")
    reply = grammar.execute_button(
        ours[0],
        ours[1],
        user=linked_user(user_id, discord_workspace(interaction)),
        actor=actors.discord(user_id),
        door=DOOR,
    )
    if not reply.ok:
        # Refused or illegal: tell the clicker only; the buttons stay for someone who may.
        return render.render(reply)
    original = interaction.get("message") or {}
    before = str(original.get("content") or "") if isinstance(original, dict) else ""
    return render.clicked_message(before, reply, name)


def handle(interaction: Mapping) -> dict:
    """The response to one verified interaction."""
    kind = interaction.get("type")
    if kind == PING:
        return {"type": PONG}
    user_id, name = _invoker(interaction)
    if kind == APPLICATION_COMMAND:
        return _command(interaction, user_id)
    if kind == MESSAGE_COMPONENT:
        if not user_id:
            return render.ephemeral("Discord did not say who clicked; nothing was done.")
        return _clicked(interaction, user_id, name)
    if kind == AUTOCOMPLETE:
        return {"type": AUTOCOMPLETE_RESULT, "data": {"choices": []}}
    return render.ephemeral("Vibe Factory does not handle this kind of interaction.")


def _interaction(body: bytes) -> dict | None:
    try:
        interaction = json.loads(body)
    except ValueError:
        return None
    return interaction if isinstance(interaction, dict) else None


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
        return doors.unauthorized("Discord", request, exc)
    interaction = _interaction(body)
    if interaction is None:
        return JsonResponse({"error": "the body is not a JSON interaction"}, status=400)
    # A PING proves the endpoint to Discord: it carries no guild and changes nothing.
    if interaction.get("type") != PING:
        if doors.replayed(DOOR, request, "X-Signature-Ed25519"):
            return JsonResponse(render.ephemeral(doors.REPLAY_TEXT, escaped=False))
        refusal = binding.discord_refusal(interaction)
        if refusal:
            return doors.forbidden("Discord", request, refusal)
    try:
        return JsonResponse(handle(interaction))
    except Exception:  # Discord shows "interaction failed" for a 500; say something useful
        return JsonResponse(render.ephemeral(doors.trouble("Discord"), escaped=False))
