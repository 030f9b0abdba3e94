"""Notifications about the factory, not one task: a worker that paused itself, the daily budget.

Written by the real breaker and budget code, delivered by the real sender to the Slack and
Discord stand-in on 127.0.0.1.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from chatops_app import messages
from chatops_app.models import DeliveryState, Notification, notify_factory
from chatops_app.outbox import Sender
from chatops_app.slack import render as slack_render
from tasks_app import lifecycle
from tasks_app.choices import NotificationEvent
from tasks_app.models import Run
from tests.chatops_app.standins import configured_standin
from workers_app import budgets
from workers_app.breaker import CircuitBreaker, trip
from workers_app.models import Worker

pytestmark = pytest.mark.django_db

HOSTILE_ERROR = "<!channel> @everyone **401** <https://evil.example|log in here>"


@pytest.fixture
def chat_standin(settings):
    with configured_standin(settings) as standin:
        yield standin


def _send() -> None:
    stats = Sender(timeout=2.0, rng=lambda: 0.5).run(once=True)
    assert stats.failed == 0 and stats.retrying == 0, stats.errors


def _slack_text(request) -> str:
    parts = [request.body["text"]]
    parts += [b["text"]["text"] for b in request.body["blocks"] if b["type"] == "section"]
    return "\n".join(parts)


def _paused_message(standin, service: str):
    """The worker_paused message (each failed task sent its own dead-letter one too, whose
    "Last change" says its attempt was given back as the worker paused itself)."""
    (request,) = [
        r
        for r in standin.posted(service)
        if (r.body.get("text") or r.body.get("content", "")).lstrip("*").startswith("Worker @")
    ]
    return request


def _paused_worker(error: str = "Invalid API key · Please run /login") -> tuple[Worker, list[int]]:
    worker = Worker.objects.create(worker_id="@chat-breaker", lane="backend")
    breaker = CircuitBreaker(2)
    ids = []
    for goal in ("one", "two"):
        task = lifecycle.submit(goal, lane="backend", actor="cli", pipeline="none")
        claimed = lifecycle.claim_next(worker)
        lifecycle.fail(
            task.pk, worker_id=worker.pk, token=claimed.claim_token, error_type="agent_auth"
        )
        breaker.record_failure("agent_auth", task.pk)
        ids.append(task.pk)
    trip(worker.pk, breaker, last_error=error)
    return worker, ids


def test_worker_paused_arrives_in_both_with_reason_tasks_and_what_to_do(chat_standin):
    _worker, (first, second) = _paused_worker()

    _send()

    slack = _paused_message(chat_standin, "slack")
    text = _slack_text(slack)
    assert "*Worker @chat-breaker paused itself*" in text
    assert "*Why:* 2 agent_auth failures in a row: Invalid API key · Please run /login" in text
    assert f"*Attempts given back to:* #{first}, #{second}" in text
    assert "Set a valid API key for the worker" in text  # the error type's hint
    assert "manage.py vibe resume @chat-breaker" in text
    assert [b for b in slack.body["blocks"] if b["type"] == "actions"] == []  # no base URL
    discord = _paused_message(chat_standin, "discord")
    content = discord.body["content"]
    assert content.startswith("**Worker @chat-breaker paused itself**")
    assert "agent\\_auth failures in a row" in content
    assert "components" not in discord.body
    assert discord.body["allowed_mentions"] == {"parse": []}
    rows = Notification.objects.filter(event=NotificationEvent.WORKER_PAUSED)
    assert {r.state for r in rows} == {DeliveryState.SENT}


def test_worker_paused_links_to_the_workers_page_when_base_url_is_set(chat_standin, settings):
    settings.VIBE_BASE_URL = "https://factory.example.com"
    _paused_worker()

    _send()

    slack = _paused_message(chat_standin, "slack")
    (actions,) = [b for b in slack.body["blocks"] if b["type"] == "actions"]
    assert [e["url"] for e in actions["elements"]] == ["https://factory.example.com/workers/"]
    discord = _paused_message(chat_standin, "discord")
    assert "Open: <https://factory.example.com/workers/>" in discord.body["content"]


def test_agent_error_text_in_the_reason_can_never_ping_or_link(chat_standin):
    _paused_worker(HOSTILE_ERROR)

    _send()

    text = _slack_text(_paused_message(chat_standin, "slack"))
    assert "<!channel>" not in text and "<https://" not in text
    assert "&lt;!channel&gt; @everyone **401** &lt;https://evil.example|log in here&gt;" in text
    content = _paused_message(chat_standin, "discord").body["content"]
    assert "@everyone" not in content and "\\*\\*401\\*\\*" in content


def test_budget_reached_arrives_once_with_the_day_and_figures(chat_standin, settings):
    settings.TIME_ZONE = "Europe/Paris"
    settings.VIBE_DAILY_BUDGET_USD = Decimal("20")
    Worker.objects.create(worker_id="@chat-budget", lane="backend")
    task = lifecycle.submit("costly", lane="backend", actor="cli", pipeline="none")
    Run.objects.create(task=task, cost_usd=Decimal("23.456"))
    day = timezone.localtime().date().isoformat()

    assert budgets.notify_daily_budget() is True
    assert budgets.notify_daily_budget() is False
    _send()
    _send()

    (slack,) = chat_standin.delivered("slack")
    text = _slack_text(slack)
    assert "*The daily budget is reached*" in text
    assert f"*Day:* {day} (Europe/Paris)" in text
    assert "*Spent today:* $23.46" in text and "*Daily budget:* $20.00" in text
    assert "raise VIBE_DAILY_BUDGET_USD" in text
    (discord,) = chat_standin.delivered("discord")
    assert "**Spent today:** $23.46" in discord.body["content"]


def test_factory_rows_are_sent_in_order_with_task_rows(chat_standin):
    lifecycle.submit("Rotate keys", lane="backend", risk="high", actor="cli")  # awaiting approval
    _paused_worker()

    _send()

    heads = [r.body["text"].split(":")[0] for r in chat_standin.delivered("slack")]
    assert heads[0].startswith("Task #") and heads[-1] == "Worker @chat-breaker paused itself"


def test_a_key_makes_a_factory_event_once_only_per_channel():
    first = notify_factory(NotificationEvent.BUDGET_REACHED, note="x", key="budget_reached:d1")
    again = notify_factory(NotificationEvent.BUDGET_REACHED, note="x", key="budget_reached:d1")
    unkeyed = [notify_factory(NotificationEvent.WORKER_PAUSED, worker="@w") for _ in range(2)]

    assert len(first) == 2 and again == []
    assert [len(rows) for rows in unkeyed] == [2, 2]


def test_a_task_event_needs_a_task():
    with pytest.raises(IntegrityError), transaction.atomic():
        Notification.objects.create(event=NotificationEvent.DEAD_LETTER, channel="slack")
    with pytest.raises(ValueError, match="not a factory event"):
        notify_factory(NotificationEvent.BLOCKED)


def test_messages_render_without_a_task_in_the_database():
    (row, _discord) = notify_factory(
        NotificationEvent.WORKER_PAUSED,
        worker="@gone",
        note="3 sandbox_error failures in a row: bwrap: setting up uid map: Permission denied",
        data={"task_ids": [], "error_type": "sandbox_error"},
    )

    assert messages.headline(row) == "Worker @gone paused itself"
    assert (
        "Install bubblewrap" in slack_render.notification_message(row)["blocks"][1]["text"]["text"]
    )
    assert str(row) == "worker_paused @gone → slack (pending)"


def test_admin_lists_factory_rows(client, superuser):
    notify_factory(NotificationEvent.WORKER_PAUSED, worker="@admin-w", note="2 agent_auth …")
    client.force_login(superuser)

    listing = client.get(reverse("admin:chatops_app_notification_changelist"))
    row = Notification.objects.filter(worker="@admin-w").first()
    page = client.get(reverse("admin:chatops_app_notification_change", args=[row.pk]))

    assert listing.status_code == 200 and "@admin-w" in listing.content.decode()
    assert page.status_code == 200 and "2 agent_auth" in page.content.decode()


def test_an_unsent_row_is_kept_until_the_chat_is_configured(settings):
    settings.VIBE_SLACK_BOT_TOKEN = ""
    settings.VIBE_DISCORD_BOT_TOKEN = ""
    notify_factory(NotificationEvent.WORKER_PAUSED, worker="@w", note="why")

    Sender(timeout=2.0).run(once=True)

    assert set(Notification.objects.values_list("state", flat=True)) == {DeliveryState.PENDING}
    assert Notification.objects.filter(created_at__gte=timezone.now() - timedelta(minutes=1))
