"""One chat message per task, edited in place as the task moves; later news in its thread.

Real lifecycle changes write the outbox rows; a real sender talks HTTP to the Slack and Discord
stand-in, which keeps each message as a person would see it (and can delete one). Time is moved
with the sender's injectable clock.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from chatops_app.models import ChatThread, DeliveryState, Notification
from chatops_app.outbox import THREAD_WAIT_SECONDS
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task
from tests.chatops_app.standins import (
    ChatStandIn,
    configured_standin,
    subprocess_settings,
)
from tests.chatops_app.test_outbox import (
    Clock,
    _discord_buttons,
    _sender,
    _slack_buttons,
    _slack_text,
    awaiting_approval,
    blocked,
)
from tests.conftest import REPO_ROOT
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_standin(settings):
    with configured_standin(settings) as standin:
        yield standin


@pytest.fixture
def clock() -> Clock:
    return Clock()


def approved_then_dead(task: Task) -> Task:
    """The approved task's only attempt fails: its second piece of news, the dead letter."""
    lifecycle.approve(task.pk, actor="slack:U0ALICE")
    claimed = lifecycle.claim_next("@backend-1")
    assert claimed is not None and claimed.pk == task.pk
    lifecycle.fail(
        task.pk,
        worker_id="@backend-1",
        token=claimed.claim_token,
        error_type="agent_exit",
        error="exit status 3",
    )
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    return task


def risky(goal: str = "Rotate the production database password") -> Task:
    return lifecycle.submit(goal, lane="backend", risk="high", actor="cli", max_attempts=1)


def _thread(task: Task, channel: str) -> ChatThread:
    return ChatThread.objects.get(task=task, channel=channel)


def test_the_first_news_posts_the_tasks_message_and_remembers_it(chat_standin, clock):
    task = awaiting_approval()

    _sender(clock).run(once=True)

    (slack,) = chat_standin.posted("slack")
    (discord,) = chat_standin.posted("discord")
    assert "thread_ts" not in slack.body and "message_reference" not in discord.body
    slack_thread, discord_thread = _thread(task, "slack"), _thread(task, "discord")
    row = Notification.objects.get(task=task, channel="slack")
    assert slack_thread.external_id == row.external_id and slack_thread.chat_channel == "C0VIBE"
    assert discord_thread.external_id in chat_standin.discord_messages
    assert discord_thread.chat_channel == "900000000000000001"
    assert slack_thread.notification_id == row.pk and slack_thread.open
    assert slack_thread.posting_until is None


def test_the_message_is_edited_in_place_as_the_task_moves(chat_standin, clock):
    task = awaiting_approval()
    sender = _sender(clock)
    sender.run(once=True)
    thread = _thread(task, "slack")

    lifecycle.approve(task.pk, actor="slack:U0ALICE")
    stats = sender.run(once=True)

    assert stats.updated == 2 and stats.sent == 0
    (edit,) = chat_standin.edits("slack")
    assert edit.path.endswith("chat.update")
    assert (edit.body["channel"], edit.body["ts"]) == ("C0VIBE", thread.external_id)
    assert "*Now:* Pending" in _slack_text(edit)
    assert "*Last change:* approved (by slack:U0ALICE)" in _slack_text(edit)
    assert _slack_buttons(edit) == []  # nothing left to approve
    assert "unfurl_links" not in edit.body
    (dedit,) = chat_standin.edits("discord")
    assert dedit.method == "PATCH"
    assert dedit.path.endswith(f"/messages/{_thread(task, 'discord').external_id}")
    assert dedit.body["components"] == []  # the Approve button is taken off
    assert "**Now:** Pending" in dedit.body["content"]
    assert len(chat_standin.posted("slack")) == 1  # still one message

    clock.advance(3600)
    assert sender.run(once=True).updated == 0  # nothing changed since: no edit
    assert len(chat_standin.edits("slack")) == 1


def test_later_news_redraws_the_message_and_goes_as_a_reply_in_its_thread(chat_standin, clock):
    task = risky()
    sender = _sender(clock)
    sender.run(once=True)
    first_ts = _thread(task, "slack").external_id
    first_id = _thread(task, "discord").external_id

    approved_then_dead(task)
    stats = sender.run(once=True)

    assert stats.sent == 2
    top, reply = chat_standin.posted("slack")
    assert reply.body["thread_ts"] == first_ts
    assert f"Task #{task.pk} is in the dead-letter queue" in _slack_text(reply)
    assert _slack_buttons(reply) == []  # the task's message is where one acts
    edit = chat_standin.edits("slack")[-1]
    assert edit.body["ts"] == first_ts
    assert f"Task #{task.pk} is in the dead-letter queue" in _slack_text(edit)
    assert [b["action_id"] for b in _slack_buttons(edit)] == ["vibe_retry"]
    shown = chat_standin.slack_messages[first_ts]  # what the channel shows now
    assert "agent_exit" in str(shown["blocks"])
    _dtop, dreply = chat_standin.posted("discord")
    assert dreply.body["message_reference"]["message_id"] == first_id
    assert "components" not in dreply.body
    assert [b["custom_id"] for b in _discord_buttons(chat_standin.edits("discord")[-1])] == [
        f"vibe:retry:{task.pk}"
    ]
    dead = Notification.objects.get(task=task, channel="slack", event="dead_letter")
    assert dead.external_id != first_ts and dead.external_id in chat_standin.slack_messages
    assert _thread(task, "slack").notification_id == dead.pk


def test_two_pieces_of_news_before_the_first_send_still_make_one_message(chat_standin, clock):
    task = approved_then_dead(risky())

    stats = _sender(clock).run(once=True)

    assert stats.sent == 4
    for service in ("slack", "discord"):
        top, reply = chat_standin.posted(service)
        thread = _thread(task, service)
        assert ("thread_ts" in reply.body) == (service == "slack")
        assert ("message_reference" in reply.body) == (service == "discord")
        assert thread.external_id in (
            chat_standin.slack_messages if service == "slack" else chat_standin.discord_messages
        )
    assert set(Notification.objects.filter(task=task).values_list("state", flat=True)) == {"sent"}


def test_verdicts_show_on_the_message(chat_standin, clock):
    task = blocked()

    _sender(clock).run(once=True)

    (slack,) = chat_standin.posted("slack")
    assert "*Reviews:* security audit FAIL" in _slack_text(slack)
    assert "security audit FAIL" in chat_standin.posted("discord")[0].body["content"]
    assert task.status == Status.BLOCKED


def test_a_pull_request_and_delivery_state_are_drawn_when_they_change(chat_standin, clock):
    task = awaiting_approval()
    sender = _sender(clock)
    sender.run(once=True)

    Task.objects.filter(pk=task.pk).update(
        delivery_state="awaiting_merge",
        pr_number=7,
        pr_url="https://github.com/acme/app/pull/7",
        updated_at=timezone.now(),
    )
    assert sender.run(once=True).updated == 2

    text = _slack_text(chat_standin.edits("slack")[-1])
    assert "*Pull request:* https://github.com/acme/app/pull/7" in text
    assert "*Delivery:* pull request #7 open" in text


def test_a_finished_task_is_drawn_finished_then_left_alone(chat_standin, clock):
    task = awaiting_approval()
    sender = _sender(clock)
    sender.run(once=True)

    lifecycle.cancel(task.pk, actor="discord:42")
    assert sender.run(once=True).updated == 2
    assert "*Now:* Cancelled" in _slack_text(chat_standin.edits("slack")[-1])
    assert not _thread(task, "slack").open

    Task.objects.filter(pk=task.pk).update(updated_at=timezone.now())  # e.g. an admin edit
    assert sender.run(once=True).updated == 0


def test_a_deleted_message_is_posted_again_with_the_news(chat_standin, clock):
    task = risky()
    sender = _sender(clock)
    sender.run(once=True)
    old = _thread(task, "slack").external_id
    chat_standin.delete_message("slack", old)
    chat_standin.delete_message("discord", _thread(task, "discord").external_id)

    approved_then_dead(task)
    stats = sender.run(once=True)

    assert stats.sent == 2 and stats.failed == 0
    new = _thread(task, "slack").external_id
    assert new != old and new in chat_standin.slack_messages
    assert "thread_ts" not in chat_standin.posted("slack")[-1].body  # a new message, not a reply
    assert _thread(task, "discord").external_id in chat_standin.discord_messages


def test_news_waits_while_another_sender_posts_the_tasks_first_message(chat_standin, clock):
    task = awaiting_approval()
    for channel in ("slack", "discord"):  # another sender holds the first post of each
        ChatThread.objects.create(
            task=task, channel=channel, posting_until=clock.now + timedelta(seconds=60)
        )
    sender = _sender(clock)

    stats = sender.run(once=True)

    assert stats.retrying == 2 and chat_standin.received() == []
    row = Notification.objects.get(task=task, channel="slack")
    wait = (row.next_attempt_at - clock.now).total_seconds()
    assert THREAD_WAIT_SECONDS <= wait <= THREAD_WAIT_SECONDS * 1.1
    assert "being posted by another sender" in row.last_error
    assert sender.resting_until == {}  # one task waits, not the channel
    clock.advance(61)  # that sender died: its lease ran out
    assert sender.run(once=True).sent == 2
    assert len(chat_standin.posted("slack")) == 1


def test_a_first_post_that_failed_lets_the_next_try_post_at_once(chat_standin, clock):
    task = awaiting_approval()
    chat_standin.fail_next(1, status=500)
    sender = _sender(clock)
    sender.channels = [c for c in sender.channels if c.name == "slack"]

    assert sender.run(once=True).retrying == 1
    assert _thread(task, "slack").posting_until is None  # not held for the lease
    clock.advance(60)
    assert sender.run(once=True).sent == 1
    assert _thread(task, "slack").external_id


def test_an_edit_that_failed_is_tried_again_on_a_later_pass(chat_standin, clock):
    task = awaiting_approval()
    sender = _sender(clock)
    sender.channels = [c for c in sender.channels if c.name == "slack"]
    sender.run(once=True)
    lifecycle.approve(task.pk, actor="cli")
    chat_standin.fail_next(1, status=503)

    stats = sender.run(once=True)

    assert stats.updated == 0 and "HTTP 503" in stats.errors[0]
    assert "slack" in sender.resting_until  # Slack is down: the channel rests
    clock.advance(3600)
    assert sender.run(once=True).updated == 1
    assert "*Now:* Pending" in _slack_text(chat_standin.edits("slack")[-1])


@pytest.mark.slow
def test_two_senders_at_once_make_one_message_per_task_and_send_each_news_once(
    subprocess_env, python
):
    tasks = [approved_then_dead(risky(f"risky change {n}")) for n in range(8)]
    with ChatStandIn() as standin:
        standin.delay = 0.03  # each send takes a moment, so the two senders overlap
        env = {**subprocess_env, **subprocess_settings(standin)}
        argv = [python, str(REPO_ROOT / "manage.py"), "sendnotifications", "--interval", "0.2"]
        senders = [
            subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        try:
            wait_for(
                lambda: not Notification.objects.exclude(state=DeliveryState.SENT).exists(),
                timeout=60,
                what="every notification sent",
            )
        finally:
            for process in senders:
                process.send_signal(signal.SIGTERM)
            outputs = [process.communicate(timeout=30)[0] for process in senders]
            print(*outputs, sep="\n")  # pytest shows it if the wait timed out
        for service in ("slack", "discord"):
            posted = standin.posted(service)
            firsts = [r for r in posted if not ({"thread_ts", "message_reference"} & set(r.body))]
            replies = [r for r in posted if r not in firsts]
            assert Counter(_task_of(r) for r in firsts) == Counter({t.pk: 1 for t in tasks})
            assert Counter(_task_of(r) for r in replies) == Counter({t.pk: 1 for t in tasks})
    assert set(Notification.objects.values_list("state", flat=True)) == {DeliveryState.SENT}


def _task_of(request) -> int:
    text = request.body.get("text") or request.body.get("content") or ""
    return int(re.search(r"Task #(\d+)", text).group(1))
