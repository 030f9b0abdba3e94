"""One escaper per platform: a hostile goal comes out inert in a reply and in a notification."""

from __future__ import annotations

import json

import pytest

from chatops_app.discord import render as discord_render
from chatops_app.grammar import execute
from chatops_app.models import Notification
from chatops_app.slack import render as slack_render
from tasks_app import lifecycle

pytestmark = pytest.mark.django_db

HOSTILE = "@everyone <@123> <!channel> *bold* `code` &<> [click](https://evil.example)"


@pytest.fixture
def hostile():
    task = lifecycle.submit(HOSTILE, lane="frontend", risk="high", actor="cli")
    row = Notification.objects.filter(task=task, channel="slack").select_related("task").get()
    reply = execute(f"task {task.pk}", user=None, actor="cli", door="slack", trusted=True)
    return reply, row


def _slack_texts(body: dict) -> list[str]:
    """Every text Slack would render: the fallback and each block's text or elements."""
    texts = [body["text"]]
    for block in body["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        for element in block.get("elements", []):
            texts.append((element.get("text") or element)["text"])
    return texts


@pytest.mark.parametrize("source", ["reply", "notification"])
def test_slack_shows_a_hostile_goal_as_text(hostile, source):
    reply, row = hostile
    body = (
        slack_render.render(reply) if source == "reply" else slack_render.notification_message(row)
    )
    shown = "\n".join(_slack_texts(body))
    assert "&lt;!channel&gt;" in shown and "&lt;@123&gt;" in shown and "&amp;&lt;&gt;" in shown
    for text in _slack_texts(body):
        assert "<" not in text and ">" not in text  # no Slack control sequence survives
        assert "&" not in text.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
    for block in body["blocks"]:
        if block.get("text", {}).get("type") == "mrkdwn":
            assert block["text"]["verbatim"] is True  # *bold* and the URL stay plain
    assert "*bold*" not in json.dumps([b for b in body["blocks"] if b["type"] == "header"])


@pytest.mark.parametrize("source", ["reply", "notification"])
def test_discord_shows_a_hostile_goal_as_text(hostile, source):
    reply, row = hostile
    body = (
        discord_render.render(reply)["data"]
        if source == "reply"
        else discord_render.notification_message(row)
    )
    content = body["content"]
    assert "@everyone" not in content and "@\u200beveryone" in content
    assert "\\<@123>" in content and "\\<!channel>" in content
    assert "<" not in content.replace("\\<", "")  # no mention, channel or link can form
    assert "\\*bold\\*" in content and "\\`code\\`" in content
    assert "\\[click\\](https://evil.example)" in content  # no text hides a link
    assert body["allowed_mentions"] == {"parse": []}


def test_discord_keeps_our_own_task_link_clickable(db, settings):
    settings.VIBE_BASE_URL = "https://factory.example.com"
    reply = execute(
        "submit backend Add a thing", user=None, actor="cli", door="discord", trusted=True
    )
    content = discord_render.render(reply)["data"]["content"]
    assert f"https://factory.example.com/tasks/{reply.data['id']}/" in content
