"""`/vibe` and Approve/Retry buttons in Discord: every command, permissions, actors, escaping."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.urls import reverse

from chatops_app.discord.render import custom_id as discord_custom_id
from chatops_app.discord.render import escape
from chatops_app.models import ChatLink
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from tests.chatops_app.factories import dead_letter_task

FIXTURES = Path(__file__).parent / "fixtures" / "discord"
NASTY_GOAL = (
    "Fix @everyone @here <@123> <@&456> **bold** __u__ ||spoiler|| [click](https://evil.example)"
)
EPHEMERAL = 64


@pytest.fixture(autouse=True)
def key(settings) -> Ed25519PrivateKey:
    private = Ed25519PrivateKey.generate()
    settings.VIBE_DISCORD_PUBLIC_KEY = (
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    )
    return private


def _awaiting(goal: str = "drop the old billing tables") -> Task:
    return lifecycle.submit(goal, lane="backend", actor="cli", risk="high")


READER = "999"


@pytest.fixture
def reader(viewer):
    """The person `vibe()` speaks as: a linked viewer, since reading from chat needs one."""
    ChatLink.objects.create(platform="discord", external_id=READER, user=viewer)
    return viewer


INTERACTION_IDS = itertools.count(1_000_000_000_000_000_000)


def send(client, key: Ed25519PrivateKey, interaction: dict) -> dict:
    # Discord gives every interaction its own id (so its signature differs from any other's).
    interaction = {**interaction, "id": str(next(INTERACTION_IDS))}
    body = json.dumps(interaction).encode()
    ts = str(int(time.time()))
    response = client.post(
        reverse("chatops_app:discord_interactions"),
        data=body,
        content_type="application/json",
        headers={
            "X-Signature-Ed25519": key.sign(ts.encode() + body).hex(),
            "X-Signature-Timestamp": ts,
        },
    )
    assert response.status_code == 200
    answer = response.json()
    if answer["type"] in (4, 7):
        assert answer["data"]["allowed_mentions"] == {"parse": []}
        assert len(answer["data"]["content"]) <= 2000
    return answer


def _who(user_id: str, *, dm: bool = False) -> dict:
    user = {"id": user_id, "username": f"user{user_id}", "global_name": None}
    return {"user": user} if dm else {"member": {"user": user, "roles": []}, "guild_id": "1"}


def vibe(client, key, sub: str, value=None, *, user_id: str = READER, dm: bool = False) -> dict:
    option: dict = {"type": 1, "name": sub}
    if value is not None:
        option["options"] = [
            {"type": 4 if isinstance(value, int) else 3, "name": "id", "value": value}
        ]
    interaction = {
        "id": "1",
        "type": 2,
        "token": "t",
        "channel_id": "7",
        "data": {"id": "2", "name": "vibe", "type": 1, "options": [option]},
        **_who(user_id, dm=dm),
    }
    return send(client, key, interaction)


def click(client, key, action: str, task: Task, *, user_id: str, content: str = "") -> dict:
    interaction = {
        "id": "1",
        "type": 3,
        "token": "t",
        "message": {"id": "55", "content": content, "components": []},
        "data": {"custom_id": discord_custom_id(action, task.pk), "component_type": 2},
        **_who(user_id),
    }
    return send(client, key, interaction)


def _buttons(answer: dict) -> list[str]:
    return [
        button["custom_id"]
        for row in answer["data"].get("components", [])
        for button in row["components"]
    ]


# --- Every command renders --------------------------------------------------------------------


def test_status_is_posted_for_the_channel(client, key, reader, worker):
    dead_letter_task(worker)
    answer = vibe(client, key, "status")
    assert answer["type"] == 4
    assert "flags" not in answer["data"], "status is meant for the whole channel"
    content = answer["data"]["content"]
    assert content.startswith("**Vibe status**")
    assert "dead letter: 1" in content


def test_dlq_has_retry_buttons(client, key, reader, worker):
    first, second = dead_letter_task(worker, "first"), dead_letter_task(worker, "second")
    answer = vibe(client, key, "dlq")
    assert answer["data"]["flags"] == EPHEMERAL
    assert "2 dead-letter tasks" in answer["data"]["content"]
    assert set(_buttons(answer)) == {f"vibe:retry:{first.pk}", f"vibe:retry:{second.pk}"}
    row = answer["data"]["components"][0]
    assert row["type"] == 1 and all(b["type"] == 2 for b in row["components"])


def test_worker_and_task_and_help(client, key, reader, worker):
    assert "Worker @chat-test" in vibe(client, key, "worker", "@chat-test")["data"]["content"]
    task = _awaiting()
    answer = vibe(client, key, "task", task.pk)
    assert f"Task #{task.pk}" in answer["data"]["content"]
    assert _buttons(answer) == [f"vibe:approve:{task.pk}"]
    help_answer = vibe(client, key, "help")
    assert "Usage: /vibe" in help_answer["data"]["content"]
    assert help_answer["data"]["flags"] == EPHEMERAL


def test_unknown_subcommand_and_unknown_command_get_the_usage(client, key, db):
    answer = vibe(client, key, "launch")
    assert answer["data"]["content"].startswith("**⚠️")
    assert "Usage: /vibe" in answer["data"]["content"]
    # Discord's documented example is some other bot's /cardsearch.
    other = json.loads((FIXTURES / "slash_command_discord_docs.json").read_text())
    answer = send(client, key, other)
    assert "not a Vibe command" in answer["data"]["content"]
    assert answer["data"]["flags"] == EPHEMERAL
    bare = json.loads((FIXTURES / "application_command_djs.json").read_text())
    assert "Usage: /vibe" in send(client, key, bare)["data"]["content"]


def test_autocomplete_and_unknown_interaction_types_are_answered(client, key, db):
    auto = json.loads((FIXTURES / "autocomplete_djs.json").read_text())
    assert send(client, key, auto) == {"type": 8, "data": {"choices": []}}
    odd = send(client, key, {"id": "1", "type": 5, "token": "t", **_who("1")})
    assert odd["type"] == 4 and odd["data"]["flags"] == EPHEMERAL


# --- Who may act ------------------------------------------------------------------------------


def test_linked_approver_approves_and_retries_with_their_discord_id(client, key, approver, worker):
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    waiting, dead = _awaiting(), dead_letter_task(worker)
    assert "approved" in vibe(client, key, "approve", waiting.pk, user_id="4242")["data"]["content"]
    answer = vibe(client, key, "retry", dead.pk, user_id="4242", dm=True)  # a DM carries `user`
    assert "reset to pending" in answer["data"]["content"]
    for task in (waiting, dead):
        task.refresh_from_db()
        assert task.status == Status.PENDING
        assert task.history.last().actor == "discord:4242"


def test_viewer_and_unlinked_are_refused_and_nothing_changes(client, key, viewer, worker):
    ChatLink.objects.create(platform="discord", external_id="777", user=viewer)
    waiting, dead = _awaiting(), dead_letter_task(worker)
    counts = (waiting.history.count(), dead.history.count())
    refused = vibe(client, key, "approve", waiting.pk, user_id="777")["data"]["content"]
    assert "vera does not have the permission to approve" in refused
    unlinked = vibe(client, key, "retry", dead.pk, user_id="31337")["data"]["content"]
    assert "not linked" in unlinked and "vibe link discord 31337" in unlinked
    waiting.refresh_from_db()
    dead.refresh_from_db()
    assert (waiting.status, dead.status) == (Status.AWAITING_APPROVAL, Status.DEAD_LETTER)
    assert (waiting.history.count(), dead.history.count()) == counts
    assert not TaskHistory.objects.filter(actor__startswith="discord:").exists()


def test_unlinked_and_inactive_people_cannot_read(client, key, approver, worker):
    dead = dead_letter_task(worker)
    approver.is_active = False
    approver.save()
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    for user_id in ("31337", "4242"):
        for sub, value in (("task", dead.pk), ("dlq", None), ("status", None)):
            answer = vibe(client, key, sub, value, user_id=user_id)
            content = answer["data"]["content"]
            assert "cannot read tasks" in content and f"vibe link discord {user_id}" in content
            assert "build the login page" not in content and "components" not in answer["data"]
    assert "Usage: /vibe" in vibe(client, key, "help", user_id="31337")["data"]["content"]


def test_illegal_move_is_the_lifecycle_message(client, key, approver):
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    task = lifecycle.submit("fine", lane="backend", actor="cli")
    content = vibe(client, key, "approve", task.pk, user_id="4242")["data"]["content"]
    assert "only awaiting approval tasks can be approved" in content


# --- Buttons ----------------------------------------------------------------------------------


def test_approve_button_updates_the_message_and_removes_buttons(client, key, approver):
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    task = _awaiting()
    answer = click(client, key, "approve", task, user_id="4242", content="**Task needs you**")
    assert answer["type"] == 7
    assert answer["data"]["components"] == []
    assert answer["data"]["content"].startswith("**Task needs you**\n✅ ")
    assert f"Task #{task.pk} approved — by user4242" in answer["data"]["content"]
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.history.last().actor == "discord:4242"


def test_retry_button_by_an_approver(client, key, approver, worker):
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    task = dead_letter_task(worker)
    assert click(client, key, "retry", task, user_id="4242")["type"] == 7
    task.refresh_from_db()
    assert task.status == Status.PENDING


def test_refused_click_is_ephemeral_and_keeps_the_buttons(client, key, viewer, worker):
    ChatLink.objects.create(platform="discord", external_id="777", user=viewer)
    task = dead_letter_task(worker)
    history = task.history.count()
    for user_id in ("777", "31337"):
        answer = click(client, key, "retry", task, user_id=user_id)
        assert answer["type"] == 4
        assert answer["data"]["flags"] == EPHEMERAL
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    assert task.history.count() == history


def test_second_click_is_told_it_was_already_done(client, key, approver):
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    task = _awaiting()
    click(client, key, "approve", task, user_id="4242")
    again = click(client, key, "approve", task, user_id="4242")
    assert again["type"] == 4 and "only awaiting approval" in again["data"]["content"]
    assert TaskHistory.objects.filter(task=task, actor="discord:4242").count() == 1


def test_buttons_that_are_not_ours(client, key, db):
    foreign = json.loads((FIXTURES / "message_component_djs.json").read_text())
    foreign.update(_who("1"))
    answer = send(client, key, foreign)
    assert answer["type"] == 4 and "not one of Vibe Factory's" in answer["data"]["content"]
    anonymous = json.loads((FIXTURES / "message_component_djs.json").read_text())
    assert "did not say who clicked" in send(client, key, anonymous)["data"]["content"]


# --- Escaping ---------------------------------------------------------------------------------


def test_task_text_cannot_mention_or_format(client, key, reader, worker):
    task = dead_letter_task(worker, NASTY_GOAL)
    for answer in (vibe(client, key, "task", task.pk), vibe(client, key, "dlq")):
        content = answer["data"]["content"]
        assert answer["data"]["allowed_mentions"] == {"parse": []}
        assert "@everyone" not in content and "@here" not in content
        assert "<@" not in content.replace("\\<@", "")
        assert "**bold**" not in content
        assert "[click](" not in content
        assert "\\*\\*bold\\*\\*" in content


def test_escape_keeps_the_text_readable():
    assert escape("a_b *c* @everyone") == "a\\_b \\*c\\* @\u200beveryone"
    assert escape("<@&1> `x` ||s||") == "\\<@&1> \\`x\\` \\|\\|s\\|\\|"
    assert escape("# big\n> quote\n- item\n1. first\ntask #42 - ok") == (
        "\\# big\n\\> quote\n\\- item\n1\\. first\ntask #42 - ok"
    )
    assert escape(r"back\slash") == r"back\\slash"


def test_long_replies_fit_discord_limits(client, key, reader, worker):
    for n in range(12):
        dead_letter_task(worker, f"broken {n} " + "_" * 400)
    answer = vibe(client, key, "dlq")
    assert len(answer["data"]["content"]) <= 2000
    assert len(_buttons(answer)) == 5


def test_the_button_on_a_real_notification_works(client, key, approver):
    """The outbox's own Discord message (chatops_app.messages), clicked: the halves agree."""
    from chatops_app.discord.render import notification_message as discord_message
    from chatops_app.models import Notification

    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    task = _awaiting("@everyone look")
    message = discord_message(Notification.objects.get(task=task, channel="discord"))
    (custom_id,) = [b["custom_id"] for row in message["components"] for b in row["components"]]
    interaction = {
        "id": "1",
        "type": 3,
        "token": "t",
        "message": {"id": "55", **message},
        "data": {"custom_id": custom_id, "component_type": 2},
        **_who("4242"),
    }
    answer = send(client, key, interaction)
    assert answer["type"] == 7
    assert answer["data"]["content"].startswith(message["content"])
    assert "@everyone" not in answer["data"]["content"]
    task.refresh_from_db()
    assert task.status == Status.PENDING


def test_update_of_a_long_message_keeps_who_did_what(client, key, approver):
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    task = _awaiting()
    answer = click(client, key, "approve", task, user_id="4242", content="x" * 2000)
    assert len(answer["data"]["content"]) <= 2000
    assert answer["data"]["content"].endswith(f"Task #{task.pk} approved — by user4242")


@pytest.mark.parametrize(
    "odd",
    [
        {"type": 3, "data": ["not", "a", "dict"], "user": {"id": "1"}},
        {"type": 3, "data": {"custom_id": 5}, "member": "nobody"},
        {"type": 2, "data": {"name": "vibe", "options": 7}, "user": "x"},
        {
            "type": 2,
            "data": {"name": "vibe", "options": [{"type": 1, "name": "task", "options": 3}]},
        },
        {"type": "2"},
        {},
    ],
)
def test_oddly_shaped_signed_interactions_get_an_answer(client, key, db, odd):
    answer = send(client, key, odd)
    assert answer["type"] in (1, 4)


def test_an_internal_error_is_a_friendly_reply_not_a_500(client, key, db, caplog):
    from django.db import connection

    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute("ALTER TABLE chat_links RENAME TO chat_links_away")
    answer = send(client, key, {"type": 2, "data": {"name": "vibe"}, "user": {"id": "1"}})
    assert "internal error" in answer["data"]["content"]
    assert answer["data"]["flags"] == EPHEMERAL
    assert "Discord request failed" in caplog.text
