"""The notification outbox: what arrives in Slack and Discord, and that nothing is lost or doubled.

Every test drives real lifecycle changes (which write the outbox rows) and a real sender talking
HTTP to the stand-in on 127.0.0.1. Time is moved with the sender's injectable clock, never by
sleeping through a backoff.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from chatops_app.discord.render import custom_id as discord_custom_id
from chatops_app.discord.render import parse_custom_id as parse_discord_custom_id
from chatops_app.models import DeliveryState, Notification
from chatops_app.outbox import Sender, resend_failed
from chatops_app.slack.render import parse_action as parse_slack_action
from tasks_app import lifecycle
from tasks_app.choices import NotificationEvent, Status
from tasks_app.models import Task
from tests.chatops_app.standins import configured_standin
from workers_app.models import Worker

pytestmark = pytest.mark.django_db

NASTY_GOAL = "Fix <!channel> & @everyone <@U123|boss> *bold* **loud** <https://evil.example|click>"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def chat_standin(settings):
    with configured_standin(settings) as standin:
        yield standin


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _sender(clock: Clock, **options) -> Sender:
    options.setdefault("timeout", 2.0)
    options.setdefault("retry_base", 10.0)
    options.setdefault("retry_max", 600.0)
    options.setdefault("permanent_tries", 3)
    return Sender(clock=clock, rng=lambda: 0.5, **options)


def awaiting_approval(goal: str = "Rotate the production database password") -> Task:
    return lifecycle.submit(goal, lane="backend", risk="high", actor="cli")


def dead_letter(goal: str = "Add a health endpoint") -> Task:
    Worker.objects.get_or_create(worker_id="@backend-1", defaults={"lane": "backend"})
    task = lifecycle.submit(goal, lane="backend", actor="cli", pipeline="none")
    claimed = lifecycle.claim_next("@backend-1")
    assert claimed is not None and claimed.pk == task.pk
    lifecycle.fail(
        task.pk,
        worker_id="@backend-1",
        token=claimed.claim_token,
        error_type="agent_missing",
        error="claude: command not found",
    )
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    return task


def blocked(goal: str = "Store user passwords") -> Task:
    """Backend work whose security audit FAILs with a CRITICAL finding: the pipeline blocks it."""
    Worker.objects.get_or_create(
        worker_id="@backend-1", defaults={"lane": "backend", "capacity_limit": 5}
    )
    Worker.objects.get_or_create(worker_id="@security-1", defaults={"lane": "security"})
    task = lifecycle.submit(goal, lane="backend", actor="cli", pipeline="backend")
    work = lifecycle.claim_next("@backend-1")
    lifecycle.complete(work.pk, worker_id="@backend-1", token=work.claim_token)
    review = lifecycle.claim_next("@security-1")
    lifecycle.complete(
        review.pk,
        worker_id="@security-1",
        token=review.claim_token,
        result={
            "verdict": "FAIL",
            "findings": [{"severity": "CRITICAL", "title": "Passwords stored in plain text"}],
        },
    )
    task.refresh_from_db()
    assert task.status == Status.BLOCKED
    return task


def _slack_buttons(request) -> list[dict]:
    return [
        element
        for block in request.body["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def _discord_buttons(request) -> list[dict]:
    return [c for row in request.body.get("components", []) for c in row["components"]]


def _slack_text(request) -> str:
    parts = [request.body["text"]]
    parts += [b["text"]["text"] for b in request.body["blocks"] if b["type"] == "section"]
    return "\n".join(parts)


# --- What arrives -------------------------------------------------------------------------------


def test_awaiting_approval_arrives_in_both_with_an_approve_button(chat_standin, clock):
    task = awaiting_approval()

    stats = _sender(clock).run(once=True)

    assert stats.sent == 2
    (slack,) = chat_standin.delivered("slack")
    assert slack.headers["Authorization"] == f"Bearer {chat_standin.slack_token}"
    assert slack.body["channel"] == "C0VIBE"
    assert f"Task #{task.pk} is waiting for approval" in _slack_text(slack)
    (button,) = _slack_buttons(slack)
    assert parse_slack_action(button["action_id"], button["value"]) == ("approve", str(task.pk))
    (discord,) = chat_standin.delivered("discord")
    assert discord.path == "/discord/api/v10/channels/900000000000000001/messages"
    assert discord.headers["Authorization"] == f"Bot {chat_standin.discord_token}"
    assert discord.body["allowed_mentions"] == {"parse": []}
    (dbutton,) = _discord_buttons(discord)
    assert parse_discord_custom_id(dbutton["custom_id"]) == ("approve", str(task.pk))
    assert dbutton["label"] == "Approve"

    rows = Notification.objects.filter(task=task)
    assert {r.state for r in rows} == {DeliveryState.SENT}
    slack_row = rows.get(channel="slack")
    assert slack_row.external_id.endswith(".000100")
    assert slack_row.attempts == 1 and slack_row.sent_at is not None
    assert rows.get(channel="discord").external_id.isdigit()


def test_dead_letter_arrives_with_retry_button_error_type_and_hint(chat_standin, clock):
    task = dead_letter()

    _sender(clock).run(once=True)

    (slack,) = chat_standin.delivered("slack")
    text = _slack_text(slack)
    assert f"Task #{task.pk} is in the dead-letter queue" in text
    assert "agent_missing" in text and "claude: command not found" in text
    assert "Install it or fix the worker's agent profile" in text
    assert "*Lane:* Backend" in text
    (button,) = _slack_buttons(slack)
    assert parse_slack_action(button["action_id"], button["value"]) == ("retry", str(task.pk))
    (discord,) = chat_standin.delivered("discord")
    assert [b["custom_id"] for b in _discord_buttons(discord)] == [
        discord_custom_id("retry", task.pk)
    ]
    assert "agent\\_missing" in discord.body["content"]


def test_blocked_task_arrives_with_retry_button_and_the_finding(chat_standin, clock):
    task = blocked()

    _sender(clock).run(once=True)

    (slack,) = chat_standin.delivered("slack")
    text = _slack_text(slack)
    assert f"Task #{task.pk} is blocked and needs a person" in text
    assert "Passwords stored in plain text" in text
    assert "review_blocked" in text
    (button,) = _slack_buttons(slack)
    assert (button["action_id"], button["value"]) == ("vibe_retry", str(task.pk))
    (discord,) = chat_standin.delivered("discord")
    assert _discord_buttons(discord)[0]["custom_id"] == f"vibe:retry:{task.pk}"


def test_task_text_is_escaped_so_it_can_never_ping_or_link(chat_standin, clock):
    awaiting_approval(NASTY_GOAL)

    _sender(clock).run(once=True)

    (slack,) = chat_standin.delivered("slack")
    text = _slack_text(slack)
    assert "<!channel>" not in text and "<@U123" not in text and "<https://" not in text
    assert "&lt;!channel&gt; &amp; @everyone &lt;@U123|boss&gt;" in text
    assert "<" not in text.replace("&lt;", "")  # no Slack control sequence survives
    (discord,) = chat_standin.delivered("discord")
    content = discord.body["content"]
    assert "@everyone" not in content and "@\u200beveryone" in content
    assert "\\<@U123\\|boss>" in content  # `<` escaped: no mention can form
    assert "\\*\\*loud\\*\\*" in content  # markdown neutralised
    assert "\\<https://evil.example\\|click>" in content  # `<` escaped: no hidden link
    assert discord.body["allowed_mentions"] == {"parse": []}


def test_message_links_to_the_task_page_only_when_base_url_is_set(chat_standin, clock, settings):
    settings.VIBE_BASE_URL = "https://factory.example.com"
    task = awaiting_approval()
    _sender_and_run(clock)
    settings.VIBE_BASE_URL = ""
    awaiting_approval("Second task")
    _sender_and_run(clock)

    first, second = chat_standin.delivered("slack")
    link = [b for b in _slack_buttons(first) if "url" in b]
    assert link and link[0]["url"].startswith("https://factory.example.com/")
    assert str(task.pk) in link[0]["url"]
    assert [b for b in _slack_buttons(second) if "url" in b] == []
    with_link, without = chat_standin.delivered("discord")
    assert "Open: <https://factory.example.com/" in with_link.body["content"]
    assert "Open:" not in without.body["content"]


def test_button_is_left_off_when_the_task_moved_on_before_sending(chat_standin, clock):
    task = awaiting_approval()
    lifecycle.approve(task.pk, actor="cli")

    _sender(clock).run(once=True)

    (slack,) = chat_standin.delivered("slack")
    assert _slack_buttons(slack) == []
    assert "*Now:* Pending" in _slack_text(slack)
    assert "components" not in chat_standin.delivered("discord")[0].body


# --- Failures and retries -----------------------------------------------------------------------


def test_http_500_keeps_it_pending_with_backoff_then_delivers_exactly_once(chat_standin, clock):
    task = awaiting_approval()
    chat_standin.fail_next(1, status=500)  # the first request (Slack) fails

    stats = _sender_and_run(clock)

    assert stats.sent == 1 and stats.retrying == 1
    row = Notification.objects.get(task=task, channel="slack")
    assert row.state == DeliveryState.PENDING
    assert row.attempts == 1
    assert row.next_attempt_at > clock.now
    assert "HTTP 500" in row.last_error
    assert chat_standin.delivered("slack") == []

    sender = _sender(clock)
    assert sender.run(once=True).handled == 0  # not due yet: nothing sent early
    clock.advance(60)
    assert sender.run(once=True).sent == 1
    row.refresh_from_db()
    assert row.state == DeliveryState.SENT and row.attempts == 2 and row.last_error == ""
    assert len(chat_standin.delivered("slack")) == 1

    clock.advance(3600)
    assert _sender(clock).run(once=True).handled == 0
    assert len(chat_standin.delivered("slack")) == 1


def _sender_and_run(clock: Clock, **options):
    return _sender(clock, **options).run(once=True)


def test_a_timeout_keeps_it_pending_then_delivers_once(chat_standin, clock):
    task = dead_letter()
    chat_standin.timeout_next(2, seconds=3.0)  # Slack, then Discord, both hang

    stats = _sender_and_run(clock, timeout=0.3)

    assert stats.retrying == 2 and stats.sent == 0
    for row in Notification.objects.filter(task=task):
        assert row.state == DeliveryState.PENDING and row.attempts == 1
        assert row.next_attempt_at > clock.now
        assert "could not reach" in row.last_error
    clock.advance(60)
    assert _sender_and_run(clock, timeout=0.3).sent == 2
    assert len(chat_standin.delivered("slack")) == 1
    assert len(chat_standin.delivered("discord")) == 1


def test_connection_refused_keeps_it_pending(chat_standin, clock, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.VIBE_SLACK_API_URL = f"http://127.0.0.1:{closed_port}/api/"
    settings.VIBE_DISCORD_API_URL = f"http://127.0.0.1:{closed_port}/api/v10"
    task = awaiting_approval()

    stats = _sender_and_run(clock)

    assert stats.retrying == 2
    for row in Notification.objects.filter(task=task):
        assert row.state == DeliveryState.PENDING and row.next_attempt_at > clock.now
        assert "could not reach" in row.last_error


def test_rate_limit_honours_retry_after(chat_standin, clock):
    task = awaiting_approval()
    chat_standin.rate_limit_next(2, retry_after=120)

    _sender_and_run(clock)

    for row in Notification.objects.filter(task=task):
        wait = (row.next_attempt_at - clock.now).total_seconds()
        assert 120 <= wait <= 133, (row.channel, wait)
        assert row.state == DeliveryState.PENDING
    clock.advance(100)
    assert _sender_and_run(clock).handled == 0
    clock.advance(40)
    assert _sender_and_run(clock).sent == 2


def test_an_outage_rests_the_channel_instead_of_trying_every_row(chat_standin, clock):
    for n in range(3):
        awaiting_approval(f"task {n}")
    chat_standin.fail_next(1, status=503)

    sender = _sender(clock)
    sender.channels = [c for c in sender.channels if c.name == "slack"]
    stats = sender.run(once=True)

    assert stats.retrying == 1 and stats.sent == 0
    assert len(chat_standin.received("slack")) == 1  # not three
    clock.advance(60)
    assert sender.run(once=True).sent == 3


def test_refusal_is_retried_a_few_times_then_failed_with_the_error_kept(chat_standin, clock):
    task = awaiting_approval()
    chat_standin.slack_token = "xoxb-the-real-one"  # ours is now wrong: invalid_auth

    sender = _sender(clock, permanent_tries=3)
    sender.channels = [c for c in sender.channels if c.name == "slack"]
    for _ in range(3):
        sender.run(once=True)
        clock.advance(3600)

    row = Notification.objects.get(task=task, channel="slack")
    assert row.state == DeliveryState.FAILED
    assert row.attempts == 3
    assert "invalid_auth" in row.last_error and "VIBE_SLACK_BOT_TOKEN" in row.last_error
    assert sender.run(once=True).handled == 0  # failed rows are left alone

    chat_standin.slack_token = sender.channels[0].transport._web().token  # the token is fixed
    assert resend_failed([row.pk]) == 1
    assert sender.run(once=True).sent == 1
    row.refresh_from_db()
    assert row.state == DeliveryState.SENT


def test_discord_refusal_is_failed_after_a_few_tries(chat_standin, clock):
    task = awaiting_approval()
    chat_standin.discord_token = "another-bot"

    sender = _sender(clock, permanent_tries=2)
    for _ in range(2):
        sender.run(once=True)
        clock.advance(3600)

    row = Notification.objects.get(task=task, channel="discord")
    assert row.state == DeliveryState.FAILED
    assert "HTTP 401" in row.last_error and "VIBE_DISCORD_BOT_TOKEN" in row.last_error


# --- Never twice, never lost --------------------------------------------------------------------


def test_a_sent_row_is_never_sent_again(chat_standin, clock):
    awaiting_approval()
    dead_letter()

    assert _sender_and_run(clock).sent == 4
    clock.advance(10_000)
    assert _sender_and_run(clock).sent == 0
    assert len(chat_standin.received()) == 4


def test_a_sender_that_outlived_its_lease_cannot_overwrite_the_newer_outcome(chat_standin, clock):
    awaiting_approval()
    slow = _sender(clock)
    row = slow.due("slack", clock.now).get()
    token = slow._claim(row, clock.now)
    assert token == 1
    assert slow._claim(row, clock.now) is None  # a second claim of the same row loses

    clock.advance(slow.lease.total_seconds() + 1)  # the first sender hung past its lease
    fresh = _sender(clock)
    fresh.channels = [c for c in fresh.channels if c.name == "slack"]
    assert fresh.run(once=True).sent == 1

    assert slow._finish(row, token, state=DeliveryState.FAILED, last_error="late") is False
    row.refresh_from_db()
    assert row.state == DeliveryState.SENT and row.attempts == 2


def test_without_tokens_nothing_is_sent_and_rows_stay_pending(clock, settings):
    settings.VIBE_SLACK_BOT_TOKEN = ""
    settings.VIBE_SLACK_CHANNEL = ""
    settings.VIBE_DISCORD_BOT_TOKEN = ""
    settings.VIBE_DISCORD_CHANNEL_ID = ""
    settings.VIBE_SLACK_API_URL = "http://127.0.0.1:9/api/"  # would fail loudly if used
    task = awaiting_approval()

    sender = _sender(clock)
    lines = sender.describe()
    stats = sender.run(once=True)

    assert stats.handled == 0
    assert lines == [
        "Slack: not configured (set VIBE_SLACK_BOT_TOKEN and VIBE_SLACK_CHANNEL); "
        "its notifications are kept, not sent (1 waiting)",
        "Discord: not configured (set VIBE_DISCORD_BOT_TOKEN and VIBE_DISCORD_CHANNEL_ID); "
        "its notifications are kept, not sent (1 waiting)",
    ]
    rows = Notification.objects.filter(task=task)
    assert [(r.state, r.attempts) for r in rows] == [(DeliveryState.PENDING, 0)] * 2


def test_only_the_configured_channel_sends(chat_standin, clock, settings):
    settings.VIBE_DISCORD_BOT_TOKEN = ""
    task = awaiting_approval()

    assert _sender_and_run(clock).sent == 1

    assert chat_standin.received("discord") == []
    assert Notification.objects.get(task=task, channel="discord").state == DeliveryState.PENDING


def test_a_change_that_rolled_back_leaves_no_notification(chat_standin, clock):
    with pytest.raises(RuntimeError), transaction.atomic():
        awaiting_approval("Never happened")
        raise RuntimeError("the caller's transaction failed after submit")

    assert not Task.objects.filter(goal="Never happened").exists()
    assert Notification.objects.count() == 0
    assert _sender_and_run(clock).handled == 0
    assert chat_standin.received() == []


def test_each_event_writes_one_row_per_channel(chat_standin):
    task = awaiting_approval()
    lifecycle.approve(task.pk, actor="cli")

    rows = Notification.objects.filter(task=task)
    assert sorted(rows.values_list("channel", "event")) == [
        ("discord", NotificationEvent.AWAITING_APPROVAL),
        ("slack", NotificationEvent.AWAITING_APPROVAL),
    ]


def test_backoff_grows_is_capped_and_survives_weeks_of_retries(clock):
    sender = _sender(clock, retry_base=10.0, retry_max=600.0)

    delays = [sender.backoff(n).total_seconds() for n in (1, 2, 3, 10, 5000)]

    assert delays == [7.5, 15.0, 30.0, 450.0, 450.0]  # rng 0.5 → 75% of the nominal delay
