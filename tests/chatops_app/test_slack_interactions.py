"""Approve/Retry buttons in Slack (`block_actions`), with Slack's response_url stood in for by
a small HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import queue
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.utils import timezone

from chatops_app.models import ChatLink, DeliveryState, Notification, reply_to_click
from chatops_app.outbox import Sender
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from tests.chatops_app.factories import dead_letter_task, slack_post
from tests.standins.http import Reply, Request, StandIn

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
SECRET = "test-slack-signing-secret"


class ResponseUrlStandIn(StandIn):
    """Records what is POSTed to it; answers `status` after `delay` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.received: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.status = 200
        self.delay = 0.0
        self.start()

    @property
    def url(self) -> str:
        return f"{super().url}/actions/T1/1/secret"

    def handle(self, request: Request) -> Reply:
        time.sleep(self.delay)
        self.received.put((request.path, request.json or {}))
        body = "ok" if self.status == 200 else "error"
        return Reply(self.status, body, {"Content-Type": "text/plain"})

    def next(self, timeout: float = 5.0) -> tuple[str, dict]:
        """The next POST, running the outbox's sender (it delivers clicks' answers) meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            Sender().run(once=True)
            try:
                return self.received.get(timeout=0.05)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise

    def assert_nothing(self, wait: float = 0.3) -> None:
        Sender().run(once=True)
        with pytest.raises(queue.Empty):
            self.received.get(timeout=wait)


@pytest.fixture
def response_url():
    stand_in = ResponseUrlStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture(autouse=True)
def slack_secret(settings) -> str:
    settings.VIBE_SLACK_SIGNING_SECRET = SECRET
    return SECRET


def _notification_message(task: Task, action: str) -> dict:
    """The message a notification put in the channel (as Slack echoes it in the payload)."""
    return {
        "type": "message",
        "ts": "1700000000.000100",
        "text": f"Task #{task.pk} needs you",
        "blocks": [
            {
                "type": "section",
                "block_id": "head",
                "text": {"type": "mrkdwn", "text": f"*Task #{task.pk}* needs you"},
            },
            {
                "type": "actions",
                "block_id": "buttons",
                "elements": [
                    {
                        "type": "button",
                        "action_id": f"vibe_{action}",
                        "value": str(task.pk),
                        "text": {"type": "plain_text", "text": action.title()},
                    },
                    {
                        "type": "button",
                        "action_id": "vibe_open",
                        "url": f"https://vibe.example.com/tasks/{task.pk}/",
                        "text": {"type": "plain_text", "text": "Open"},
                    },
                ],
            },
        ],
    }


def _payload(task: Task, action: str, slack_user: str, url: str, name: str = "alice.s") -> dict:
    return {
        "type": "block_actions",
        "user": {"id": slack_user, "username": name, "name": name, "team_id": "T1"},
        "team": {"id": "T1"},
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "channel": {"id": "C1", "name": "factory"},
        "message": _notification_message(task, action),
        "response_url": url,
        "actions": [
            {
                "type": "button",
                "action_id": f"vibe_{action}",
                "block_id": "buttons",
                "value": str(task.pk),
                "action_ts": "1700000001.000200",
            }
        ],
    }


def click(client, payload: dict | str):
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    body = f"payload={quote(raw)}".encode()
    return slack_post(client, "chatops_app:slack_interactions", body, SECRET)


def _texts(blocks: list[dict]) -> str:
    out = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        for element in block.get("elements", []):
            text = element.get("text")
            out.append(text["text"] if isinstance(text, dict) else text)
    return "\n".join(out)


def test_approver_approves_from_a_button_and_the_message_shows_who(client, approver, response_url):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("drop the old tables", lane="backend", actor="cli", risk="high")
    response = click(client, _payload(task, "approve", "U0ALICE", response_url.url))
    assert response.status_code == 200
    assert response.content == b""

    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.history.last().actor == "slack:U0ALICE"

    path, message = response_url.next()
    assert path == "/actions/T1/1/secret"
    assert message["replace_original"] is True
    buttons = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == ["vibe_open"], "Approve is gone, the link stays"
    assert message["blocks"][0]["block_id"] == "head", "the original message is kept"
    assert message["blocks"][-1]["type"] == "context"
    assert f"Task #{task.pk} approved — by alice.s" in _texts(message["blocks"])
    assert f"Task #{task.pk} approved" in message["text"]


def test_approver_retries_from_a_button(client, approver, worker, response_url):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = dead_letter_task(worker)
    assert click(client, _payload(task, "retry", "U0ALICE", response_url.url)).status_code == 200
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.history.last().actor == "slack:U0ALICE"
    _, message = response_url.next()
    assert "reset to pending" in _texts(message["blocks"])


@pytest.mark.parametrize("who", ["viewer", "unlinked"])
def test_refused_click_changes_nothing_and_tells_only_the_clicker(
    client, viewer, worker, response_url, who
):
    if who == "viewer":
        ChatLink.objects.create(platform="slack", external_id="U0VERA", user=viewer)
    task = dead_letter_task(worker)
    history = task.history.count()
    slack_user = "U0VERA" if who == "viewer" else "U0STRANGER"
    assert click(client, _payload(task, "retry", slack_user, response_url.url)).status_code == 200

    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    assert task.history.count() == history
    _, message = response_url.next()
    assert message["replace_original"] is False
    assert message["response_type"] == "ephemeral"
    text = _texts(message["blocks"])
    expected = "does not have the permission to retry" if who == "viewer" else "not linked"
    assert expected in text


def test_double_click_acts_once(client, approver, response_url):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    payload = _payload(task, "approve", "U0ALICE", response_url.url)
    click(client, payload)
    payload["actions"][0]["action_ts"] = "1700000001.000300"  # the second click, a moment later
    click(client, payload)
    messages = [response_url.next()[1], response_url.next()[1]]
    assert sorted(m["replace_original"] for m in messages) == [False, True]
    refusal = next(m for m in messages if not m["replace_original"])
    assert "only awaiting approval tasks can be approved" in _texts(refusal["blocks"])
    assert TaskHistory.objects.filter(task=task, actor="slack:U0ALICE").count() == 1


def test_link_button_click_is_ignored(client, approver, response_url):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    payload = _payload(task, "approve", "U0ALICE", response_url.url)
    payload["actions"] = [{"type": "button", "action_id": "vibe_open", "block_id": "buttons"}]
    assert click(client, payload).status_code == 200
    response_url.assert_nothing()
    task.refresh_from_db()
    assert task.status == Status.AWAITING_APPROVAL


def test_buttons_that_are_not_ours_are_ignored(client, db, response_url):
    """bolt-python's block_actions fixture: action_id "a" is some other app's button."""
    payload = json.loads((FIXTURES / "block_actions_bolt.json").read_text())
    payload["response_url"] = response_url.url
    assert click(client, payload).status_code == 200
    response_url.assert_nothing()


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", json.dumps({"type": "view_submission"})])
def test_unreadable_or_other_payloads_get_an_empty_ok(client, db, response_url, raw):
    assert click(client, raw).status_code == 200
    response_url.assert_nothing()


def test_a_slow_slack_does_not_hold_the_answer(client, approver, response_url):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    response_url.delay = 1.5
    started = time.monotonic()
    assert click(client, _payload(task, "approve", "U0ALICE", response_url.url)).status_code == 200
    assert time.monotonic() - started < 1.0
    response_url.next(timeout=6)


def test_a_failing_response_url_is_logged_not_a_500(client, approver, response_url, caplog):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    response_url.status = 500
    assert click(client, _payload(task, "approve", "U0ALICE", response_url.url)).status_code == 200
    response_url.next()
    task.refresh_from_db()
    assert task.status == Status.PENDING
    deadline = time.monotonic() + 5
    while "response_url answered 500" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "response_url answered 500" in caplog.text


def test_a_click_answer_waits_in_the_outbox_while_slack_is_down(client, approver, response_url):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    response_url.status = 503
    assert click(client, _payload(task, "approve", "U0ALICE", response_url.url)).status_code == 200
    row = Notification.objects.get(event="click_reply")
    assert (row.channel, row.task_id, row.data["response_url"]) == ("slack", None, response_url.url)
    response_url.next()  # the first try meets a Slack that is down
    row.refresh_from_db()
    assert (row.state, row.attempts) == (DeliveryState.PENDING, 1)

    response_url.status = 200
    later = timezone.now() + timedelta(hours=1)
    Sender(clock=lambda: later).run(once=True)
    _, message = response_url.received.get(timeout=5)
    assert message["replace_original"] is True
    row.refresh_from_db()
    assert row.state == DeliveryState.SENT


def test_unreachable_response_url_is_harmless(client, approver, response_url):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    dead_url = response_url.url
    response_url.close()
    assert click(client, _payload(task, "approve", "U0ALICE", dead_url)).status_code == 200
    task.refresh_from_db()
    assert task.status == Status.PENDING


def test_clicker_name_is_escaped(client, approver, response_url):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")
    payload = _payload(task, "approve", "U0ALICE", response_url.url, name="<!channel>")
    click(client, payload)
    _, message = response_url.next()
    assert "<!channel>" not in json.dumps(message)
    assert "by &lt;!channel&gt;" in _texts(message["blocks"])


def test_the_button_on_a_real_notification_works(client, approver, response_url):
    """The outbox's own Slack message (chatops_app.messages), clicked: the two halves agree."""
    from chatops_app.models import Notification
    from chatops_app.slack.render import notification_message as slack_message

    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = lifecycle.submit("<!channel> risky", lane="backend", actor="cli", risk="high")
    notification = Notification.objects.get(task=task, channel="slack")
    message = slack_message(notification)
    (button,) = [
        e
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] != "vibe_open"
    ]
    payload = _payload(task, "approve", "U0ALICE", response_url.url)
    payload["message"] = {"type": "message", "ts": "1.2", **message}
    payload["actions"] = [{**button, "block_id": "x", "action_ts": "1.3"}]
    assert click(client, payload).status_code == 200
    task.refresh_from_db()
    assert task.status == Status.PENDING
    _, update = response_url.next()
    assert "<!channel>" not in json.dumps(update)
    assert f"Task #{task.pk} approved — by alice.s" in _texts(update["blocks"])


def test_a_clicks_answer_goes_first_and_even_while_slack_rests(db, response_url, settings):
    settings.VIBE_SLACK_BOT_TOKEN = "xoxb-test"
    settings.VIBE_SLACK_CHANNEL = "C1"
    task = lifecycle.submit("risky", lane="backend", actor="cli", risk="high")  # a notification
    reply_to_click(response_url.url, {"text": "Task approved."}, task_id=str(task.pk))
    sender = Sender()
    sender.resting_until["slack"] = timezone.now() + timedelta(hours=1)  # Slack said 429
    sender.send_due()
    _, message = response_url.received.get(timeout=5)
    assert message["text"] == "Task approved."
    assert Notification.objects.get(event="click_reply").state == DeliveryState.SENT
    # The channel's own rows wait out the rest.
    waiting = Notification.objects.get(task=task, channel="slack")
    assert (waiting.state, waiting.attempts) == (DeliveryState.PENDING, 0)
