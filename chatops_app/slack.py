"""Slack's side of the grammar: who is asking, and a grammar `Reply` as Block Kit.

Everything a person can type or a task can contain goes into `plain_text` objects with `&`, `<`
and `>` escaped, so a goal like `<!channel>` is shown as text and can never ping a channel, and
`*markup*` in a goal is not rendered as formatting.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from slack_sdk.webhook import WebhookClient

from . import grammar, models
from .binding import slack_workspace
from .buttons import parse_slack_action, slack_action_id
from .models import Platform

if TYPE_CHECKING:
    from .replies import Button, Reply

logger = logging.getLogger(__name__)

DOOR = "slack"
HEADER_LIMIT = 150  # Slack's limit for a header block's text
SECTION_LIMIT = 3000  # ... for a section's text
FALLBACK_LIMIT = 3000
MAX_SECTIONS = 40  # a message may hold 50 blocks; leave room for header and buttons
RESPONSE_URL_TIMEOUT_SECONDS = 5


def escape(text: str) -> str:
    """Slack's three control characters as entities; `&` first so entities are not doubled."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str, limit: int) -> dict:
    """A plain_text object: escaped first, then cut, so an entity is never cut in half."""
    escaped = escape(text)
    if len(escaped) > limit:
        escaped = escaped[: limit - 1]
        amp = escaped.rfind("&")
        if amp != -1 and ";" not in escaped[amp:]:
            escaped = escaped[:amp]
        escaped += "…"
    return {"type": "plain_text", "text": escaped or " ", "emoji": False}


def _chunks(lines: list[str], limit: int) -> list[str]:
    """Join lines into texts that stay under `limit` once escaped (escaping at most 5x)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        cost = len(escape(line)) + 1
        if current and size + cost > limit:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += cost
    if current:
        chunks.append("\n".join(current))
    return chunks


def button_blocks(buttons: list[Button]) -> list[dict]:
    """One actions block per button: Slack wants each action_id unique within its block."""
    blocks = []
    for button in buttons:
        element = {
            "type": "button",
            "action_id": slack_action_id(button.action),
            "value": str(button.task_id),
            "text": _plain(button.label, 75),
        }
        if button.action == "approve":
            element["style"] = "primary"
        blocks.append(
            {
                "type": "actions",
                "block_id": f"vibe_{button.action}_{button.task_id}",
                "elements": [element],
            }
        )
    return blocks


def render(reply: Reply) -> dict:
    """A slash-command response: Block Kit plus an escaped plain-text fallback."""
    title = reply.title if reply.ok else f"⚠️ {reply.title}"
    blocks: list[dict] = []
    if len(title) <= HEADER_LIMIT:
        blocks.append({"type": "header", "text": _plain(title, HEADER_LIMIT)})
        body = list(reply.lines)
    else:
        # Long refusals (the lifecycle's full sentence) still read whole in a section.
        body = [title, *reply.lines]
    for chunk in _chunks(body, SECTION_LIMIT - 100)[:MAX_SECTIONS]:
        blocks.append({"type": "section", "text": _plain(chunk, SECTION_LIMIT)})
    blocks += button_blocks(reply.buttons)
    return {
        "response_type": "in_channel" if reply.public else "ephemeral",
        "text": _truncate(escape(reply.as_text()), FALLBACK_LIMIT),
        "blocks": blocks,
    }


def parse_form(body: bytes) -> dict[str, str]:
    """A verified url-encoded body as a dict of first values (Slack never repeats a key)."""
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def linked_user(external_id: str, workspace: str = ""):
    """The active Django user a Slack user id in team `workspace` is linked to, or None."""
    return models.linked_user(Platform.SLACK, external_id, workspace)


def handle_command(form: Mapping[str, str]) -> dict:
    """`/vibe <text>` from a verified request, as the JSON to answer with."""
    slack_user = form.get("user_id", "")
    reply = grammar.execute(
        form.get("text", ""),
        user=linked_user(slack_user, slack_workspace(form)),
        actor=f"slack:{slack_user or 'unknown'}",
        door=DOOR,
    )
    return render(reply)


# --- Button clicks ----------------------------------------------------------------------------


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _clicked_by(payload: Mapping) -> str:
    user = _dict(payload.get("user"))
    return str(user.get("username") or user.get("name") or user.get("id") or "someone")


def _without_our_buttons(block: dict) -> dict | None:
    """`block` minus our Approve/Retry buttons (link buttons stay); None when nothing is left."""
    if block.get("type") != "actions":
        return block
    elements = [
        element
        for element in block.get("elements") or []
        if isinstance(element, dict)
        and parse_slack_action(str(element.get("action_id", "")), str(element.get("value", "")))
        is None
    ]
    return {**block, "elements": elements} if elements else None


def updated_message(original: Mapping | None, reply: Reply, who: str) -> dict:
    """The clicked message after a successful click: our buttons gone, who did what below."""
    outcome = {
        "type": "context",
        "elements": [_plain(f"{reply.title} — by {who}", SECTION_LIMIT)],
    }
    blocks = [
        kept
        for block in (original or {}).get("blocks") or []
        if isinstance(block, dict) and (kept := _without_our_buttons(block))
    ]
    if not blocks:
        blocks = render(reply)["blocks"]
    text = (original or {}).get("text") or escape(reply.title)
    return {
        "replace_original": True,
        "text": _truncate(f"{text}\n{escape(reply.title)} — by {escape(who)}", FALLBACK_LIMIT),
        "blocks": [*blocks[:48], outcome],
    }


def _refusal_message(reply: Reply) -> dict:
    """A refused click: told to the clicker only, the original message left for someone else."""
    message = render(reply)
    message.update(response_type="ephemeral", replace_original=False)
    return message


def post_to_response_url(url: str, message: dict) -> None:
    """Send `message` to Slack's response_url; failures are logged, never raised."""
    try:
        response = WebhookClient(url, timeout=RESPONSE_URL_TIMEOUT_SECONDS).send_dict(message)
        if response.status_code >= 300:
            logger.warning(
                "Slack response_url answered %s: %s", response.status_code, response.body
            )
    except Exception:  # a chat service being down must never break the click
        logger.exception("could not post to Slack's response_url")


def handle_interaction(payload: Mapping, *, background: bool = True) -> list[Reply]:
    """Run our buttons in a verified `block_actions` payload; reply through its response_url.

    The HTTP answer to Slack is an empty 200 right away; the message update goes out on a
    thread so a slow Slack never holds our answer past its 3 seconds.
    """
    if payload.get("type") != "block_actions":
        return []
    slack_user = str(_dict(payload.get("user")).get("id") or "")
    user = linked_user(slack_user, slack_workspace(payload))
    who = _clicked_by(payload)
    replies = []
    actions = payload.get("actions")
    for action in actions if isinstance(actions, list) else []:
        if not isinstance(action, dict):
            continue
        ours = parse_slack_action(str(action.get("action_id", "")), str(action.get("value", "")))
        if ours is None:
            continue
        reply = grammar.execute_button(
            ours[0], ours[1], user=user, actor=f"slack:{slack_user or 'unknown'}", door=DOOR
        )
        replies.append(reply)
        message = (
            updated_message(_dict(payload.get("message")), reply, who)
            if reply.ok
            else _refusal_message(reply)
        )
        url = payload.get("response_url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            if background:
                threading.Thread(
                    target=post_to_response_url, args=(url, message), daemon=True
                ).start()
            else:
                post_to_response_url(url, message)
    return replies


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
