"""Message building at the edges: huge, hostile task text still makes a valid chat message."""

from __future__ import annotations

import pytest

from chatops_app.discord import render as discord_render
from chatops_app.models import Notification
from chatops_app.slack import render as slack_render
from tasks_app import lifecycle

pytestmark = pytest.mark.django_db


def _notification(goal: str, note: str = "") -> Notification:
    task = lifecycle.submit(goal, lane="frontend", risk="high", actor="cli")
    row = Notification.objects.filter(task=task, channel="slack").select_related("task").get()
    if note:
        row.note = note
    return row


def test_huge_goals_full_of_control_characters_fit_slack_limits_without_half_entities():
    row = _notification("&<>" * 3000, note="<&>" * 600)

    body = slack_render.notification_message(row)

    for block in body["blocks"]:
        if block["type"] == "section":
            text = block["text"]["text"]
            assert 0 < len(text) <= slack_render.SECTION_LIMIT
            for piece in text.split("&")[1:]:
                assert piece.startswith(("amp;", "lt;", "gt;")), piece[:6]
    assert "<" not in body["text"] and ">" not in body["text"]


def test_huge_goals_fit_discord_content_limit_and_stay_escaped():
    row = _notification("@everyone **x** " * 600, note="[a](https://evil.example) " * 100)

    body = discord_render.notification_message(row)

    assert len(body["content"]) <= discord_render.CONTENT_LIMIT
    assert "@everyone" not in body["content"]
    assert "](" not in body["content"].replace("\\](", "").replace("\\]\\(", "")
    assert body["allowed_mentions"] == {"parse": []}


def test_escaping_functions():
    assert slack_render.escape("a & <b> c") == "a &amp; &lt;b&gt; c"
    assert discord_render.escape("@here <#1> `x` # h") == "@\u200bhere \\<#1> \\`x\\` # h"
