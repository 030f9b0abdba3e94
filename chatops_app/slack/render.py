"""Everything Vibe Factory shows in Slack, as Block Kit: grammar replies and notifications.

One escaper (`escape`) serves both: everything a person can type or a task can contain has `&`,
`<` and `>` escaped, so a goal like `<!channel>` shows as text and can never ping a channel or
fake a link. Replies put it in `plain_text` objects, so `*markup*` in a goal is not formatting
either; notifications bold their own labels in `mrkdwn` marked `verbatim`. Our buttons carry
`vibe_<action>` ids with the task id as value, which `parse_action` reads back on a click.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from tasks_app.choices import FACTORY_EVENTS, NotificationEvent

from .. import messages
from ..models import Notification
from ..replies import BUTTON_ACTIONS, Button, Reply

HEADER_LIMIT = 150  # Slack's limit for a header block's text
SECTION_LIMIT = 3000  # ... for a section's text
BUTTON_LIMIT = 75  # ... for a button's text
FALLBACK_LIMIT = 3000
MAX_SECTIONS = 40  # a message may hold 50 blocks; leave room for header and buttons
ACTION_PREFIX = "vibe_"
OPEN_ACTION = "vibe_open"  # a link button: Slack still sends a click, which we ignore


def escape(text: str) -> str:
    """Slack's three control characters as entities; `&` first so entities are not doubled."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_escaped(escaped: str, limit: int) -> str:
    """Cut escaped text to `limit` without leaving half an entity such as `&am`."""
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _plain(text: str, limit: int) -> PlainTextObject:
    """A plain_text object: escaped first, then cut, so an entity is never cut in half."""
    return PlainTextObject(text=_cut_escaped(escape(text), limit) or " ", emoji=False)


def _mrkdwn(text: str) -> SectionBlock:
    """A section of our own mrkdwn (its untrusted parts escaped already), links not unfurled."""
    return SectionBlock(text=MarkdownTextObject(text=text or " ", verbatim=True))


def action_id(action: str) -> str:
    """Slack `action_id` of a button; its `value` is the task id."""
    return f"{ACTION_PREFIX}{action}"


def parse_action(action_id: str, value: str) -> tuple[str, str] | None:
    """(action, task id text) for one of our buttons, or None for anything else."""
    if not action_id.startswith(ACTION_PREFIX):
        return None
    action = action_id.removeprefix(ACTION_PREFIX)
    return (action, value) if action in BUTTON_ACTIONS else None


def action_button(action: str, task_id: int, label: str, *, primary: bool) -> ButtonElement:
    return ButtonElement(
        text=_plain(label, BUTTON_LIMIT),
        action_id=action_id(action),
        value=str(task_id),
        style="primary" if primary else None,
    )


def link_button(label: str, url: str) -> ButtonElement:
    return ButtonElement(text=_plain(label, BUTTON_LIMIT), action_id=OPEN_ACTION, url=url)


def _dicts(blocks: list[Block]) -> list[dict]:
    return [block.to_dict() for block in blocks]


# --- Grammar replies --------------------------------------------------------------------------


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
    return _dicts(
        [
            ActionsBlock(
                block_id=f"{ACTION_PREFIX}{button.action}_{button.task_id}",
                elements=[
                    action_button(
                        button.action,
                        button.task_id,
                        button.label,
                        primary=button.action == "approve",
                    )
                ],
            )
            for button in buttons
        ]
    )


def render(reply: Reply) -> dict:
    """A slash-command response: Block Kit plus an escaped plain-text fallback."""
    title = reply.title if reply.ok else f"⚠️ {reply.title}"
    blocks: list[Block] = []
    if len(title) <= HEADER_LIMIT:
        blocks.append(HeaderBlock(text=_plain(title, HEADER_LIMIT)))
        body = list(reply.lines)
    else:
        # Long refusals (the lifecycle's full sentence) still read whole in a section.
        body = [title, *reply.lines]
    for chunk in _chunks(body, SECTION_LIMIT - 100)[:MAX_SECTIONS]:
        blocks.append(SectionBlock(text=_plain(chunk, SECTION_LIMIT)))
    return {
        "response_type": "in_channel" if reply.public else "ephemeral",
        "text": _truncate(escape(reply.as_text()), FALLBACK_LIMIT),
        "blocks": _dicts(blocks) + button_blocks(reply.buttons),
    }


def _without_our_buttons(block: dict) -> dict | None:
    """`block` minus our Approve/Retry buttons (link buttons stay); None when nothing is left."""
    if block.get("type") != "actions":
        return block
    elements = [
        element
        for element in block.get("elements") or []
        if isinstance(element, dict)
        and parse_action(str(element.get("action_id", "")), str(element.get("value", ""))) is None
    ]
    return {**block, "elements": elements} if elements else None


def clicked_message(original: Mapping | None, reply: Reply, who: str) -> dict:
    """The clicked message after a successful click: our buttons gone, who did what below."""
    outcome = ContextBlock(elements=[_plain(f"{reply.title} — by {who}", SECTION_LIMIT)])
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
        "blocks": [*blocks[:48], outcome.to_dict()],
    }


def refusal_message(reply: Reply) -> dict:
    """A refused click: told to the clicker only, the original message left for someone else."""
    message = render(reply)
    message.update(response_type="ephemeral", replace_original=False)
    return message


# --- Notifications ----------------------------------------------------------------------------


def _facts_text(facts: list[tuple[str, str]]) -> str:
    text = "\n".join(f"*{label}:* {escape(value)}" for label, value in facts)
    return _cut_escaped(text, SECTION_LIMIT)


def _message_body(text: str, blocks: list[Block]) -> dict[str, Any]:
    return {"text": text, "blocks": _dicts(blocks), "unfurl_links": False, "unfurl_media": False}


def _factory_message(notification: Notification) -> dict:
    title = messages.headline(notification)
    blocks: list[Block] = [
        _mrkdwn(f"*{escape(title)}*"),
        _mrkdwn(_facts_text(messages.factory_facts(notification))),
    ]
    url = messages.pool_url() if notification.event == NotificationEvent.WORKER_PAUSED else ""
    if url:
        blocks.append(
            ActionsBlock(block_id="vibe_pool", elements=[link_button("Open the workers page", url)])
        )
    summary = messages.clip(notification.note, 150)
    return _message_body(escape(f"{title}: {summary}" if summary else title), blocks)


def notification_message(notification: Notification) -> dict:
    """`chat.postMessage` arguments (without the channel): a plain fallback and Block Kit."""
    task = notification.task
    if task is None or notification.event in FACTORY_EVENTS:
        return _factory_message(notification)
    title = messages.headline(notification)
    blocks: list[Block] = [
        _mrkdwn(f"*{title}*"),
        _mrkdwn(escape(messages.clip(task.goal, messages.GOAL_LIMIT))),
        _mrkdwn(_facts_text(messages.facts(notification))),
    ]
    elements = []
    action = messages.action_button(notification)
    if action:
        elements.append(action_button(action[0], task.pk, action[1], primary=True))
    url = messages.task_url(task)
    if url:
        elements.append(link_button(f"Open task #{task.pk}", url))
    if elements:
        blocks.append(ActionsBlock(block_id=f"vibe_task_{task.pk}", elements=elements))
    return _message_body(f"{title}: {escape(messages.clip(task.goal, 150))}", blocks)


def edit_arguments(body: dict) -> dict:
    """`chat.update` arguments from a message body (it knows no unfurl options)."""
    return {key: value for key, value in body.items() if not key.startswith("unfurl_")}


def thread_reply(body: dict, thread_ts: str) -> dict:
    """The news as a reply in the task's thread: the task's message keeps the action buttons."""
    blocks = []
    for block in body.get("blocks", []):
        if block.get("type") == "actions":
            links = [element for element in block["elements"] if "url" in element]
            if not links:
                continue
            block = {**block, "elements": links}
        blocks.append(block)
    return {**body, "blocks": blocks, "thread_ts": thread_ts}
