"""Discord's side of the grammar: interactions in, interaction responses out.

Task text is escaped for Discord's markdown and mentions, and every response carries
`allowed_mentions: {"parse": []}`, so a goal with `@everyone` or `<@&role>` can never ping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import grammar, models
from .binding import discord_workspace
from .buttons import discord_custom_id, parse_discord_custom_id
from .discord_api import VIBE_COMMAND
from .models import Platform

if TYPE_CHECKING:
    from .replies import Button, Reply

DOOR = "discord"
COMMAND_NAME = "vibe"
CONTENT_LIMIT = 2000
EPHEMERAL = 1 << 6
NO_MENTIONS = {"parse": []}

# Interaction types (requests) and callback types (responses), from Discord's docs.
PING = 1
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
PONG = 1
CHANNEL_MESSAGE = 4
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8

SUB_COMMAND = 1  # the option type of a subcommand; the command itself is in discord_api

# Backslash-escape the characters Discord's markdown gives a meaning anywhere in a line, `<`
# included so `<@123>`, `<#channel>` and `<t:…>` show as typed; the ones that only mean something
# at the start of a line (headings, quotes, lists) are escaped only there, to keep "#42" readable.
# `@everyone` and `@here` get a zero-width space, so even a client that ignored
# `allowed_mentions` would not ping.
_MARKDOWN = re.compile(r"([\\*_~`|\[\]<])")
_LINE_START = re.compile(r"^(\s*)(?:([#>+\-])|(\d+)\.)", re.MULTILINE)
_MASS_MENTION = re.compile(r"@(everyone|here)", re.IGNORECASE)


def escape(text: str) -> str:
    """Task or user text as literal Discord text: no formatting, links or mentions."""
    text = _MARKDOWN.sub(r"\\\1", str(text))
    text = _LINE_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[2] else f"{m[1]}{m[3]}\\.", text)
    return _MASS_MENTION.sub("@\u200b\\1", text)


def _truncate(text: str, limit: int = CONTENT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    # Never end on a lone escaping backslash, which would escape the ellipsis instead.
    if (len(cut) - len(cut.rstrip("\\"))) % 2:
        cut = cut[:-1]
    return cut + "…"


def components(buttons: list[Button]) -> list[dict]:
    """Buttons in action rows (at most 5 per row, 5 rows)."""
    elements = [
        {
            "type": 2,
            "style": 3 if button.action == "approve" else 1,  # green approve, blurple retry
            "label": button.label[:80],
            "custom_id": discord_custom_id(button.action, button.task_id),
        }
        for button in buttons[:25]
    ]
    return [{"type": 1, "components": elements[i : i + 5]} for i in range(0, len(elements), 5)]


def content(reply: Reply) -> str:
    title = reply.title if reply.ok else f"⚠️ {reply.title}"
    lines = [f"**{escape(title)}**", *(escape(line) for line in reply.lines)]
    return _truncate("\n".join(lines))


def render(reply: Reply) -> dict:
    """CHANNEL_MESSAGE_WITH_SOURCE, ephemeral unless the reply is meant for the channel."""
    data: dict = {"content": content(reply), "allowed_mentions": NO_MENTIONS}
    if not reply.public:
        data["flags"] = EPHEMERAL
    if reply.buttons:
        data["components"] = components(reply.buttons)
    return {"type": CHANNEL_MESSAGE, "data": data}


def _message(text: str) -> dict:
    return {
        "type": CHANNEL_MESSAGE,
        "data": {"content": escape(text), "allowed_mentions": NO_MENTIONS, "flags": EPHEMERAL},
    }


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
    """The option names of one of our subcommands, in the order `discord_api` registers them."""
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
        key=lambda sub: order.index(sub.get("name")) if sub.get("name") in order else len(order),
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


def _clicked(interaction: Mapping, user_id: str, name: str) -> dict:
    data = interaction.get("data")
    data = data if isinstance(data, dict) else {}
    ours = parse_discord_custom_id(str(data.get("custom_id", "")))
    if ours is None:
        return _message("That button is not one of Vibe Factory's.")
    reply = grammar.execute_button(
        ours[0],
        ours[1],
        user=linked_user(user_id, discord_workspace(interaction)),
        actor=f"discord:{user_id}",
        door=DOOR,
    )
    if not reply.ok:
        # Refused or illegal: tell the clicker only; the buttons stay for someone who may.
        return render(reply)
    original = interaction.get("message") or {}
    before = str(original.get("content") or "") if isinstance(original, dict) else ""
    after = f"✅ {escape(reply.title)} — by {escape(name)}"
    return {
        "type": UPDATE_MESSAGE,
        "data": {
            # Cut the old text, not the new line: who did what must always show.
            "content": f"{_truncate(before, CONTENT_LIMIT - len(after) - 1)}\n{after}"
            if before
            else _truncate(after),
            "components": [],
            "allowed_mentions": NO_MENTIONS,
        },
    }


def handle(interaction: Mapping) -> dict:
    """The response to one verified interaction."""
    kind = interaction.get("type")
    if kind == PING:
        return {"type": PONG}
    user_id, name = _invoker(interaction)
    if kind == APPLICATION_COMMAND:
        data = interaction.get("data") or {}
        if not isinstance(data, dict) or data.get("name") != COMMAND_NAME:
            return render(grammar.help_reply(ok=False, prefix="That is not a Vibe command."))
        reply = grammar.execute(
            command_text(data),
            user=linked_user(user_id, discord_workspace(interaction)),
            actor=f"discord:{user_id or 'unknown'}",
            door=DOOR,
        )
        return render(reply)
    if kind == MESSAGE_COMPONENT:
        if not user_id:
            return _message("Discord did not say who clicked; nothing was done.")
        return _clicked(interaction, user_id, name)
    if kind == AUTOCOMPLETE:
        return {"type": AUTOCOMPLETE_RESULT, "data": {"choices": []}}
    return _message("Vibe Factory does not handle this kind of interaction.")
