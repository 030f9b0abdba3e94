"""What a notification says in Slack and in Discord.

Task text (goals, errors, notes) is written by agents and people, so it is untrusted: for Slack
it is escaped (`&`, `<`, `>`), so `<!channel>` or a fake link shows as text; for Discord,
mentions and markdown are neutralised and `allowed_mentions` is empty, so nothing can ping anyone.
Buttons carry the encodings of `buttons.py`, which the Slack and Discord doors read back.

Factory events (a worker that paused itself, the daily budget) have no task: they render from
the row's `worker`, `note` and `data`, with the same escaping, and no buttons.

Every piece of that text passes through `_clip` or `_tail`, which redact secret-looking strings
(`redact.py`) before cutting: agent output and error text often quote keys and tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from tasks_app.choices import FACTORY_EVENTS, Delivery, DeliveryState, NotificationEvent, Status
from tasks_app.costs import format_usd
from tasks_app.lifecycle import error_hint
from tasks_app.models import Task
from tasks_app.pipeline import REVIEW_LABELS

from .buttons import discord_custom_id, slack_action_id
from .models import Notification
from .redact import redact

GOAL_LIMIT = 500
ERROR_LIMIT = 400
NOTE_LIMIT = 300
SLACK_SECTION_LIMIT = 3000
DISCORD_CONTENT_LIMIT = 2000

HEADLINES = {
    NotificationEvent.DEAD_LETTER: "is in the dead-letter queue",
    NotificationEvent.BLOCKED: "is blocked and needs a person",
    NotificationEvent.AWAITING_APPROVAL: "is waiting for approval",
    NotificationEvent.AWAITING_MERGE: "passed every review and awaits merge",
}
FACTORY_HEADLINES = {
    NotificationEvent.WORKER_PAUSED: "Worker {worker} paused itself",
    NotificationEvent.BUDGET_REACHED: "The daily budget is reached",
}

# Error types the pipeline sets when it blocks work; the lifecycle's table covers the rest.
REVIEW_HINTS = {
    "review_blocked": "A review found a blocking finding. Read the findings on the task page, "
    "fix the work, then retry.",
    "review_failed": "Reviews kept failing. Read the findings, decide, then retry or cancel.",
}

# The button each event offers, when the task is still in that event's status.
EVENT_ACTIONS = {
    NotificationEvent.AWAITING_APPROVAL: ("approve", "Approve"),
    NotificationEvent.DEAD_LETTER: ("retry", "Retry"),
    NotificationEvent.BLOCKED: ("retry", "Retry"),
}


def _clip(text: str, limit: int) -> str:
    """Untrusted text, redacted, then cut to its first `limit` characters."""
    text = redact((text or "").replace("\x00", "")).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tail(text: str, limit: int) -> str:
    """Untrusted text, redacted, then cut to its last `limit` characters (where errors end)."""
    text = redact((text or "").replace("\x00", "")).strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def task_url(task: Task) -> str:
    """Absolute link to the task page, or "" when VIBE_BASE_URL is unset."""
    if not settings.VIBE_BASE_URL:
        return ""
    try:
        path = task.get_absolute_url()
    except NoReverseMatch:
        try:
            path = reverse("admin:tasks_app_task_change", args=[task.pk])
        except NoReverseMatch:
            return ""
    return settings.VIBE_BASE_URL + path


def _hint(task: Task) -> str:
    return REVIEW_HINTS.get(task.last_error_type, "") or error_hint(task.last_error_type)


def _button(notification: Notification) -> tuple[str, str] | None:
    """The action button, only while the task still waits for it (else it would only fail)."""
    task = notification.task
    if notification.event == NotificationEvent.AWAITING_MERGE:
        if task.status != Status.REVIEW_NEEDED or task.delivery != Delivery.MERGE:
            return None  # a pull request is merged on GitHub; its link is in the facts
        if task.delivery_state == DeliveryState.CONFLICT:
            return ("rebase", "Rebase and rework")
        return ("merge", "Merge") if task.delivery_state == DeliveryState.AWAITING_MERGE else None
    action = EVENT_ACTIONS.get(notification.event)
    if action is None or task.status != notification.event:
        return None
    return action


def _facts(notification: Notification) -> list[tuple[str, str]]:
    """(label, untrusted value) pairs shown under the headline, in order."""
    task = notification.task
    facts = [
        ("Lane", task.get_lane_display()),
        ("Priority", str(task.priority)),
        ("Risk", task.get_risk_display()),
        ("Attempts", f"{task.attempt_count}/{task.max_attempts}"),
    ]
    if task.status != notification.event:
        facts.append(("Now", Status(task.status).label if task.status in Status.values else "?"))
        change = task.history.order_by("-created_at", "-id").first()
        if change is not None:
            what = _clip(change.note, 150) or Status(change.to_status).label.lower()
            facts.append(("Last change", f"{what} (by {change.actor})"))
    if notification.note:
        facts.append(("Why", _clip(notification.note, NOTE_LIMIT)))
    reviews = _reviews(task)
    if reviews:
        facts.append(("Reviews", reviews))
    if notification.event == NotificationEvent.AWAITING_MERGE and task.branch:
        facts.append(("Branch", task.branch))
    if task.delivery_state and task.delivery_summary:
        facts.append(("Delivery", task.delivery_summary))
    if task.pr_url:
        facts.append(("Pull request", task.pr_url))
    if notification.event == NotificationEvent.AWAITING_MERGE and task.conflicts:
        facts.append(("Conflicts", _clip(", ".join(task.conflicts), NOTE_LIMIT)))
    quiet = (NotificationEvent.AWAITING_APPROVAL, NotificationEvent.AWAITING_MERGE)
    if notification.event not in quiet and task.last_error_type:
        facts.append(("Error", task.last_error_type))
        if task.last_error:
            facts.append(("Error text", _tail(task.last_error, ERROR_LIMIT)))
        hint = _hint(task)
        if hint:
            facts.append(("Hint", hint))
    return facts


def _reviews(task: Task) -> str:
    """The current round's reviews with their verdicts: 'security audit PASS 92 · QA running'."""
    if task.is_review or task.pipeline in ("", "none"):
        return ""
    rows = task.children.filter(review_round=task.review_round).order_by("pipeline_step", "pk")
    shown = []
    for review in rows.only("lane", "status", "verdict", "score"):
        label = REVIEW_LABELS.get(review.lane, review.lane)
        if review.verdict:
            score = f" {review.score}" if review.score is not None else ""
            shown.append(f"{label} {review.verdict}{score}")
        else:
            shown.append(f"{label} {Status(review.status).label.lower()}")
    return " · ".join(shown)


def headline(notification: Notification) -> str:
    if notification.event in FACTORY_EVENTS:
        template = FACTORY_HEADLINES[notification.event]
        return template.format(worker=notification.worker or "?")
    return f"Task #{notification.task_id} {HEADLINES.get(notification.event, notification.event)}"


def pool_url() -> str:
    """Absolute link to the worker pool, or "" when VIBE_BASE_URL is unset."""
    if not settings.VIBE_BASE_URL:
        return ""
    try:
        return settings.VIBE_BASE_URL + reverse("workers_app:pool")
    except NoReverseMatch:
        return ""


def _money(value: object) -> str:
    try:
        return format_usd(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return "?"


def _factory_facts(notification: Notification) -> list[tuple[str, str]]:
    """(label, untrusted value) pairs of a factory event, from its note and data."""
    data = notification.data or {}
    facts: list[tuple[str, str]] = []
    if notification.event == NotificationEvent.WORKER_PAUSED:
        if notification.note:
            facts.append(("Why", _clip(notification.note, ERROR_LIMIT)))
        task_ids = [str(pk) for pk in data.get("task_ids", [])]
        if task_ids:
            facts.append(("Attempts given back to", ", ".join(f"#{pk}" for pk in task_ids)))
        hint = error_hint(str(data.get("error_type", "")))
        if hint:
            facts.append(("Hint", hint))
        facts.append(
            (
                "Then",
                f"resume it: manage.py vibe resume {notification.worker}, "
                "or Resume on the workers page",
            )
        )
    elif notification.event == NotificationEvent.BUDGET_REACHED:
        facts.append(("Day", f"{data.get('day', '?')} ({data.get('time_zone', 'UTC')})"))
        facts.append(("Spent today", _money(data.get("spent_usd"))))
        facts.append(("Daily budget", _money(data.get("budget_usd"))))
        if notification.note:
            facts.append(("Why", _clip(notification.note, NOTE_LIMIT)))
        facts.append(
            (
                "Then",
                "no new agent runs start until the day ends; raise VIBE_DAILY_BUDGET_USD to "
                "go on today",
            )
        )
    return facts


def _factory_slack_message(notification: Notification) -> dict:
    title = headline(notification)
    facts = "\n".join(
        f"*{label}:* {slack_escape(value)}" for label, value in _factory_facts(notification)
    )
    blocks: list[dict] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{slack_escape(title)}*", "verbatim": True},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _clip_escaped(facts, SLACK_SECTION_LIMIT) or " ",
                "verbatim": True,
            },
        },
    ]
    url = pool_url() if notification.event == NotificationEvent.WORKER_PAUSED else ""
    if url:
        button = {
            "type": "button",
            "text": {"type": "plain_text", "text": "Open the workers page"},
            "action_id": "vibe_open",
            "url": url,
        }
        blocks.append({"type": "actions", "block_id": "vibe_pool", "elements": [button]})
    summary = _clip(notification.note, 150)
    return {
        "text": slack_escape(f"{title}: {summary}" if summary else title),
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }


def _factory_discord_message(notification: Notification) -> dict:
    lines = [f"**{discord_escape(headline(notification))}**"]
    url = pool_url() if notification.event == NotificationEvent.WORKER_PAUSED else ""
    if url:
        lines.append(f"Open: <{url}>")
    lines += [
        f"**{label}:** {discord_escape(value)}" for label, value in _factory_facts(notification)
    ]
    return {"content": _clip_discord("\n".join(lines)), "allowed_mentions": {"parse": []}}


def _clip_discord(content: str) -> str:
    if len(content) > DISCORD_CONTENT_LIMIT:
        content = content[: DISCORD_CONTENT_LIMIT - 1].rstrip("\\") + "…"
    return content


# --- Slack --------------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack's three control characters, so task text can never ping, link or format a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip_escaped(text: str, limit: int) -> str:
    """Cut escaped text to Slack's block limit without leaving half an entity such as `&am`."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def slack_message(notification: Notification) -> dict:
    """`chat.postMessage` arguments (without the channel): a plain fallback and Block Kit."""
    if notification.event in FACTORY_EVENTS:
        return _factory_slack_message(notification)
    task = notification.task
    goal = slack_escape(_clip(task.goal, GOAL_LIMIT))
    title = headline(notification)
    facts = "\n".join(f"*{label}:* {slack_escape(value)}" for label, value in _facts(notification))
    facts = _clip_escaped(facts, SLACK_SECTION_LIMIT)
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*", "verbatim": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": goal or " ", "verbatim": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": facts, "verbatim": True}},
    ]
    elements: list[dict] = []
    action = _button(notification)
    if action:
        name, label = action
        elements.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": label},
                "action_id": slack_action_id(name),
                "value": str(task.pk),
                "style": "primary",
            }
        )
    url = task_url(task)
    if url:
        elements.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": f"Open task #{task.pk}"},
                "action_id": "vibe_open",
                "url": url,
            }
        )
    if elements:
        blocks.append({"type": "actions", "block_id": f"vibe_task_{task.pk}", "elements": elements})
    return {
        "text": f"{title}: {slack_escape(_clip(task.goal, 150))}",
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }


# --- Discord ------------------------------------------------------------------------------------

_DISCORD_MARKDOWN = re.compile(r"([\\*_~`|>#\-\[\]()<:])")


def discord_escape(text: str) -> str:
    """Neutralise markdown and mentions: a backslash before markup, a zero-width space after @."""
    return _DISCORD_MARKDOWN.sub(r"\\\1", text).replace("@", "@\u200b")


def discord_message(notification: Notification) -> dict:
    """The JSON body of `POST /channels/{id}/messages`: content, buttons, no mentions at all."""
    if notification.event in FACTORY_EVENTS:
        return _factory_discord_message(notification)
    task = notification.task
    lines = [f"**{headline(notification)}**"]
    url = task_url(task)
    if url:
        lines.append(f"Open: <{url}>")
    lines.append(discord_escape(_clip(task.goal, GOAL_LIMIT)))
    lines += [f"**{label}:** {discord_escape(value)}" for label, value in _facts(notification)]
    body: dict = {"content": _clip_discord("\n".join(lines)), "allowed_mentions": {"parse": []}}
    action = _button(notification)
    if action:
        name, label = action
        body["components"] = [
            {
                "type": 1,
                "components": [
                    {
                        "type": 2,
                        "style": 3 if name == "approve" else 1,
                        "label": label,
                        "custom_id": discord_custom_id(name, task.pk),
                    }
                ],
            }
        ]
    return body


# --- A task's one message, and the replies in its thread ----------------------------------------


def digest(body: dict) -> str:
    """What a message shows, as a short fingerprint: it is only edited when this changes."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def slack_edit(body: dict) -> dict:
    """`chat.update` arguments from a message body (it knows no unfurl options)."""
    return {key: value for key, value in body.items() if not key.startswith("unfurl_")}


def slack_reply(body: dict, thread_ts: str) -> dict:
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


def discord_edit(body: dict) -> dict:
    """An edit replaces the buttons too: none given means none kept (not 'unchanged')."""
    return {**body, "components": body.get("components", [])}


def discord_reply(body: dict, channel_id: str, message_id: str) -> dict:
    """The news as a reply to the task's message, without its buttons."""
    reply = {key: value for key, value in body.items() if key != "components"}
    reply["message_reference"] = {
        "message_id": message_id,
        "channel_id": channel_id,
        "fail_if_not_exists": False,
    }
    return reply
