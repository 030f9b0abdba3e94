"""Everything Vibe Factory shows in Discord: grammar replies and notifications.

One escaper (`escape`) serves both: task and user text shows as typed, with no formatting,
links or mentions, and every message carries `allowed_mentions: {"parse": []}`, so a goal with
`@everyone` or `<@&role>` can never ping. Our buttons carry `vibe:<action>:<task id>` custom ids,
which `parse_custom_id` reads back on a click.
"""

from __future__ import annotations

import re

from tasks_app.choices import FACTORY_EVENTS, NotificationEvent

from .. import messages
from ..models import Notification
from ..replies import BUTTON_ACTIONS, Button, Reply

CONTENT_LIMIT = 2000
EPHEMERAL = 1 << 6
NO_MENTIONS: dict[str, list] = {"parse": []}
CUSTOM_ID_PREFIX = "vibe"
# Interaction callback types (responses), from Discord's docs.
CHANNEL_MESSAGE = 4
UPDATE_MESSAGE = 7
# Component types and button styles.
ACTION_ROW, BUTTON = 1, 2
PRIMARY, SUCCESS = 1, 3

# A backslash before every character Discord's markdown gives a meaning anywhere in a line, `<`
# included so `<@123>`, `<@&role>`, `<#channel>` and `<t:…>` show as typed; the ones that only mean
# something at the start of a line (headings, quotes, lists) are escaped only there, to keep
# "#42" readable. A bare URL stays a link, as it shows what it points to (our own task and pull
# request links must work); with `[` escaped no text can hide a link. `@everyone` and `@here` get
# a zero-width space, so even a client that ignored `allowed_mentions` would not ping. Replies
# and notifications both come through here.
_MARKDOWN = re.compile(r"([\\*_~`|\[\]<])")
_LINE_START = re.compile(r"^(\s*)(?:([#>+\-])|(\d+)\.)", re.MULTILINE)
_MASS_MENTION = re.compile(r"@(everyone|here)", re.IGNORECASE)


def escape(text: str) -> str:
    """Task or user text as literal Discord text: no formatting, hidden links or mentions."""
    text = _MARKDOWN.sub(r"\\\1", str(text))
    text = _LINE_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[2] else f"{m[1]}{m[3]}\\.", text)
    return _MASS_MENTION.sub("@\u200b\\1", text)


def truncate(text: str, limit: int = CONTENT_LIMIT) -> str:
    """Cut to `limit`, never ending on a lone escaping backslash (it would escape the `…`)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if (len(cut) - len(cut.rstrip("\\"))) % 2:
        cut = cut[:-1]
    return cut + "…"


def custom_id(action: str, task_id: int) -> str:
    return f"{CUSTOM_ID_PREFIX}:{action}:{task_id}"


def parse_custom_id(value: str) -> tuple[str, str] | None:
    """(action, task id text) for one of our buttons, or None for anything else."""
    parts = value.split(":")
    if len(parts) != 3 or parts[0] != CUSTOM_ID_PREFIX or parts[1] not in BUTTON_ACTIONS:
        return None
    return parts[1], parts[2]


def button(action: str, task_id: int, label: str) -> dict:
    """A green Approve, a blurple anything else."""
    return {
        "type": BUTTON,
        "style": SUCCESS if action == "approve" else PRIMARY,
        "label": label[:80],
        "custom_id": custom_id(action, task_id),
    }


def components(buttons: list[Button]) -> list[dict]:
    """Buttons in action rows (at most 5 per row, 5 rows)."""
    elements = [button(b.action, b.task_id, b.label) for b in buttons[:25]]
    return [
        {"type": ACTION_ROW, "components": elements[i : i + 5]} for i in range(0, len(elements), 5)
    ]


# --- Grammar replies --------------------------------------------------------------------------


def content(reply: Reply) -> str:
    title = reply.title if reply.ok else f"⚠️ {reply.title}"
    lines = [f"**{escape(title)}**", *(escape(line) for line in reply.lines)]
    return truncate("\n".join(lines))


def render(reply: Reply) -> dict:
    """CHANNEL_MESSAGE_WITH_SOURCE, ephemeral unless the reply is meant for the channel."""
    data: dict = {"content": content(reply), "allowed_mentions": NO_MENTIONS}
    if not reply.public:
        data["flags"] = EPHEMERAL
    if reply.buttons:
        data["components"] = components(reply.buttons)
    return {"type": CHANNEL_MESSAGE, "data": data}


def ephemeral(text: str, *, escaped: bool = True) -> dict:
    """A message only the person who asked sees; `escaped=False` for our own fixed words."""
    return {
        "type": CHANNEL_MESSAGE,
        "data": {
            "content": escape(text) if escaped else text,
            "allowed_mentions": NO_MENTIONS,
            "flags": EPHEMERAL,
        },
    }


def clicked_message(before: str, reply: Reply, who: str) -> dict:
    """The clicked message after a successful click: buttons gone, who did what below."""
    after = f"✅ {escape(reply.title)} — by {escape(who)}"
    return {
        "type": UPDATE_MESSAGE,
        "data": {
            # Cut the old text, not the new line: who did what must always show.
            "content": f"{truncate(before, CONTENT_LIMIT - len(after) - 1)}\n{after}"
            if before
            else truncate(after),
            "components": [],
            "allowed_mentions": NO_MENTIONS,
        },
    }


# --- Notifications ----------------------------------------------------------------------------


def _fact_lines(facts: list[tuple[str, str]]) -> list[str]:
    return [f"**{label}:** {escape(value)}" for label, value in facts]


def _factory_message(notification: Notification) -> dict:
    lines = [f"**{escape(messages.headline(notification))}**"]
    url = messages.pool_url() if notification.event == NotificationEvent.WORKER_PAUSED else ""
    if url:
        lines.append(f"Open: <{url}>")
    lines += _fact_lines(messages.factory_facts(notification))
    return {"content": truncate("\n".join(lines)), "allowed_mentions": NO_MENTIONS}


def notification_message(notification: Notification) -> dict:
    """The JSON body of `POST /channels/{id}/messages`: content, buttons, no mentions at all."""
    task = notification.task
    if task is None or notification.event in FACTORY_EVENTS:
        return _factory_message(notification)
    lines = [f"**{messages.headline(notification)}**"]
    url = messages.task_url(task)
    if url:
        lines.append(f"Open: <{url}>")
    lines.append(escape(messages.clip(task.goal, messages.GOAL_LIMIT)))
    lines += _fact_lines(messages.facts(notification))
    body: dict = {"content": truncate("\n".join(lines)), "allowed_mentions": NO_MENTIONS}
    action = messages.action_button(notification)
    if action:
        body["components"] = [
            {"type": ACTION_ROW, "components": [button(action[0], task.pk, action[1])]}
        ]
    return body


def edit_body(body: dict) -> dict:
    """An edit replaces the buttons too: none given means none kept (not 'unchanged')."""
    return {**body, "components": body.get("components", [])}


def reply_body(body: dict, channel_id: str, message_id: str) -> dict:
    """The news as a reply to the task's message, without its buttons."""
    reply = {key: value for key, value in body.items() if key != "components"}
    reply["message_reference"] = {
        "message_id": message_id,
        "channel_id": channel_id,
        "fail_if_not_exists": False,
    }
    return reply
