"""Chat bound to our workspace: a correctly signed request from another Slack team, org or app,
or another Discord server or application (or a DM), gets 403 and changes nothing; links are
matched on the workspace the request comes from.

Every request here is correctly signed and unique, against the live views, with a linked
approver who could retry the dead-letter task if the request were ours.
"""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core import checks
from django.core.management import CommandError, call_command

from chatops_app.doors import REPLAY_TEXT
from chatops_app.models import ChatLink, SignedRequest
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from tests.chatops_app import doors
from tests.chatops_app.doors import (
    DISCORD_APPLICATION,
    DISCORD_GUILD,
    SLACK_APP,
    SLACK_ENTERPRISE,
    SLACK_TEAM,
)
from tests.chatops_app.factories import dead_letter_task

FORBIDDEN = b"this workspace is not allowed here"


@pytest.fixture(autouse=True)
def secrets(settings) -> Ed25519PrivateKey:
    settings.VIBE_SLACK_SIGNING_SECRET = doors.SLACK_SECRET
    key = Ed25519PrivateKey.generate()
    settings.VIBE_DISCORD_PUBLIC_KEY = doors.public_hex(key)
    return key


@pytest.fixture
def bound(settings) -> None:
    """Our Slack team (and a sister team), org and app; our Discord server and application."""
    settings.VIBE_SLACK_TEAM_IDS = [SLACK_TEAM, "T0SISTER"]
    settings.VIBE_SLACK_ENTERPRISE_IDS = [SLACK_ENTERPRISE]
    settings.VIBE_SLACK_APP_ID = SLACK_APP
    settings.VIBE_DISCORD_GUILD_IDS = [DISCORD_GUILD]
    settings.VIBE_DISCORD_APPLICATION_ID = DISCORD_APPLICATION


@pytest.fixture
def target(approver, worker) -> Task:
    """A dead-letter task, and an approver linked on both platforms who could retry it."""
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    ChatLink.objects.create(platform="discord", external_id="4242", user=approver)
    return dead_letter_task(worker)


def _untouched(task: Task) -> bool:
    fresh = Task.objects.get(pk=task.pk)
    chat_history = TaskHistory.objects.filter(task=task, actor__regex=r"^(slack|discord):")
    return fresh.status == Status.DEAD_LETTER and not chat_history.exists()


def _retried(task: Task) -> bool:
    return Task.objects.get(pk=task.pk).status == Status.PENDING


def _refused(response, caplog, door: str) -> None:
    assert response.status_code == 403
    assert response.content == FORBIDDEN
    assert response["Content-Type"].startswith("text/plain")
    assert f"refused {door} request" in caplog.text


# --- Slack slash commands -----------------------------------------------------------------------

SLACK_COMMAND_ELSEWHERE = {
    "another team": {"team_id": "T0EVIL"},
    "no team": {"team_id": None},
    "an empty team": {"team_id": ""},
    "another org": {"enterprise_id": "E0EVIL"},
    "no org": {"enterprise_id": None},
    "another app": {"api_app_id": "A0EVIL"},
    "no app": {"api_app_id": None},
}


@pytest.mark.parametrize("case", SLACK_COMMAND_ELSEWHERE)
def test_slack_command_from_elsewhere_is_403_and_changes_nothing(
    client, bound, target, caplog, case
):
    response = doors.slack_command(
        client, f"retry {target.pk}", "U0ALICE", **SLACK_COMMAND_ELSEWHERE[case]
    )
    _refused(response, caplog, "Slack")
    assert _untouched(target)


@pytest.mark.parametrize("team", [SLACK_TEAM, "T0SISTER"])
def test_slack_command_from_our_teams_is_heard(client, bound, target, team):
    response = doors.slack_command(client, f"retry {target.pk}", "U0ALICE", team_id=team)
    assert response.status_code == 200
    assert "reset to pending" in doors.answer_text(response)
    assert _retried(target)


def test_unbound_slack_accepts_any_team_as_before(client, target):
    response = doors.slack_command(
        client, f"retry {target.pk}", "U0ALICE", team_id="T0ANY", api_app_id=None
    )
    assert response.status_code == 200
    assert _retried(target)


def test_a_refused_read_shows_nothing(client, bound, target, caplog):
    response = doors.slack_command(client, f"task {target.pk}", "U0ALICE", team_id="T0EVIL")
    _refused(response, caplog, "Slack")
    assert b"build the login page" not in response.content
    assert "T0EVIL" in caplog.text and "VIBE_SLACK_TEAM_IDS" in caplog.text


# --- Slack button clicks ------------------------------------------------------------------------

SLACK_CLICK_ELSEWHERE = {
    "another team": {"team": "T0EVIL", "user_team": "T0EVIL"},
    "no team": {"team": None},
    # Slack Connect: someone from another organisation clicks in a channel shared with us.
    "a clicker from another team": {"user_team": "T0EVIL"},
    "another org": {"enterprise": "E0EVIL"},
    "no org": {"enterprise": None},
    "another app": {"app": "A0EVIL"},
    "no app": {"app": None},
}


@pytest.mark.parametrize("case", SLACK_CLICK_ELSEWHERE)
def test_slack_click_from_elsewhere_is_403_and_changes_nothing(client, bound, target, caplog, case):
    response = doors.slack_click(
        client, "retry", target.pk, "U0ALICE", **SLACK_CLICK_ELSEWHERE[case]
    )
    _refused(response, caplog, "Slack")
    assert _untouched(target)


def test_slack_click_from_our_team_is_heard(client, bound, target):
    response = doors.slack_click(client, "retry", target.pk, "U0ALICE")
    assert response.status_code == 200
    assert _retried(target)


# --- Discord ------------------------------------------------------------------------------------

DISCORD_ELSEWHERE = {
    "another guild": {"guild": "100000000000000666"},
    "a DM": {"guild": None},
    "another application": {"application": "800000000000000666"},
    "no application": {"application": None},
}


@pytest.mark.parametrize("case", DISCORD_ELSEWHERE)
def test_discord_command_from_elsewhere_is_403_and_changes_nothing(
    client, secrets, bound, target, caplog, case
):
    where = DISCORD_ELSEWHERE[case]
    response = doors.discord_command(client, secrets, "retry", target.pk, user_id="4242", **where)
    _refused(response, caplog, "Discord")
    assert _untouched(target)


@pytest.mark.parametrize("case", DISCORD_ELSEWHERE)
def test_discord_click_from_elsewhere_is_403_and_changes_nothing(
    client, secrets, bound, target, caplog, case
):
    where = DISCORD_ELSEWHERE[case]
    response = doors.discord_click(client, secrets, "retry", target.pk, user_id="4242", **where)
    _refused(response, caplog, "Discord")
    assert _untouched(target)


def test_dms_are_refused_and_say_so_in_the_log(client, secrets, bound, target, caplog):
    response = doors.discord_command(client, secrets, "task", target.pk, user_id="4242", guild=None)
    _refused(response, caplog, "Discord")
    assert "a DM (no guild), and VIBE_DISCORD_GUILD_IDS is set" in caplog.text


def test_discord_from_our_guild_is_heard(client, secrets, bound, target):
    response = doors.discord_command(client, secrets, "retry", target.pk, user_id="4242")
    assert response.status_code == 200
    assert "reset to pending" in response.json()["data"]["content"]
    assert _retried(target)


def test_pings_are_answered_even_when_bound(client, secrets, bound):
    """Discord proves the endpoint with a PING that carries no guild; it must still get PONG."""
    body = json.dumps({"id": "1", "type": 1, "application_id": DISCORD_APPLICATION}).encode()
    assert doors.discord_post(client, secrets, body).json() == {"type": 1}


def test_unbound_discord_accepts_dms_and_any_guild_as_before(client, secrets, target):
    for where in ({"guild": "100000000000000666"}, {"guild": None}):
        response = doors.discord_command(
            client, secrets, "task", target.pk, user_id="4242", **where
        )
        assert f"Task #{target.pk}" in response.json()["data"]["content"]


# --- Every door, every way to be refused: never a 500 ------------------------------------------


def _door_requests(client, key, task: Task) -> dict:
    """For each door: (send(ts, sign_ok, elsewhere) -> response) for one retry of `task`."""

    def slack_command(ts, good, elsewhere):
        body = doors.slack_command_body(
            f"retry {task.pk}", "U0ALICE", **({"team_id": "T0EVIL"} if elsewhere else {})
        )
        return doors.slack_signed(
            client,
            "chatops_app:slack_commands",
            body,
            ts=ts,
            secret=doors.SLACK_SECRET if good else "wrong",
        )

    def slack_click(ts, good, elsewhere):
        body = doors.slack_click_body(
            "retry", task.pk, "U0ALICE", **({"team": "T0EVIL"} if elsewhere else {})
        )
        return doors.slack_signed(
            client,
            "chatops_app:slack_interactions",
            body,
            ts=ts,
            secret=doors.SLACK_SECRET if good else "wrong",
        )

    def discord(kind):
        def send(ts, good, elsewhere):
            sender = doors.discord_command if kind == "command" else doors.discord_click
            where = {"guild": "100000000000000666"} if elsewhere else {}
            signer = key if good else Ed25519PrivateKey.generate()
            return sender(client, signer, "retry", task.pk, user_id="4242", ts=ts, **where)

        return send

    return {
        "slack command": slack_command,
        "slack click": slack_click,
        "discord command": discord("command"),
        "discord click": discord("click"),
    }


@pytest.mark.parametrize(
    "door", ["slack command", "slack click", "discord command", "discord click"]
)
def test_signature_freshness_and_workspace_matrix_on_the_live_views(
    client, secrets, bound, target, door
):
    send = _door_requests(client, secrets, target)[door]
    now = int(time.time())
    refused = {
        "bad signature": send(str(now), False, False),
        "stale": send(str(now - 400), True, False),
        "from the future": send(str(now + 400), True, False),
        "not a number": send("soon", True, False),
        "another workspace": send(str(now), True, True),
    }
    codes = {case: response.status_code for case, response in refused.items()}
    assert codes == {
        "bad signature": 401,
        "stale": 401,
        "from the future": 401,
        "not a number": 401,
        "another workspace": 403,
    }
    assert _untouched(target)
    good = send(str(now), True, False)
    assert good.status_code == 200
    assert _retried(target)
    assert all(code < 500 for code in codes.values())


def test_a_replayed_request_from_our_workspace_still_acts_once(client, bound, target):
    body = doors.slack_command_body(f"retry {target.pk}", "U0ALICE")
    ts = str(int(time.time()))
    first = doors.slack_signed(client, "chatops_app:slack_commands", body, ts=ts)
    again = doors.slack_signed(client, "chatops_app:slack_commands", body, ts=ts)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["text"] == REPLAY_TEXT
    assert TaskHistory.objects.filter(task=target, actor="slack:U0ALICE").count() == 1
    assert SignedRequest.objects.filter(door="slack").count() == 1


# --- Links scoped to a workspace ----------------------------------------------------------------


def test_a_link_with_a_workspace_only_counts_there(client, approver, worker):
    ChatLink.objects.create(
        platform="slack", workspace=SLACK_TEAM, external_id="U0ALICE", user=approver
    )
    task = dead_letter_task(worker)
    elsewhere = doors.slack_command(client, f"retry {task.pk}", "U0ALICE", team_id="T0OTHER")
    assert "not linked" in doors.answer_text(elsewhere)
    assert _untouched(task)
    ours = doors.slack_command(client, f"retry {task.pk}", "U0ALICE", team_id=SLACK_TEAM)
    assert "reset to pending" in doors.answer_text(ours)


def test_the_workspace_link_wins_over_a_blank_one(client, approver, viewer, worker):
    ChatLink.objects.create(platform="slack", external_id="U0SAME", user=viewer)
    ChatLink.objects.create(
        platform="slack", workspace=SLACK_TEAM, external_id="U0SAME", user=approver
    )
    task = dead_letter_task(worker)
    other = doors.slack_command(client, f"retry {task.pk}", "U0SAME", team_id="T0OTHER")
    assert "vera does not have the permission to retry" in doors.answer_text(other)
    ours = doors.slack_command(client, f"retry {task.pk}", "U0SAME", team_id=SLACK_TEAM)
    assert "reset to pending" in doors.answer_text(ours)
    assert TaskHistory.objects.filter(task=task, actor="slack:U0SAME").count() == 1


def test_a_slack_click_is_matched_on_its_team(client, approver, worker):
    ChatLink.objects.create(
        platform="slack", workspace=SLACK_TEAM, external_id="U0ALICE", user=approver
    )
    task = dead_letter_task(worker)
    doors.slack_click(client, "retry", task.pk, "U0ALICE", team="T0OTHER", user_team="T0OTHER")
    assert _untouched(task)
    doors.slack_click(client, "retry", task.pk, "U0ALICE")
    assert _retried(task)


def test_a_discord_link_with_a_guild_does_not_count_in_dms(client, secrets, approver, worker):
    ChatLink.objects.create(
        platform="discord", workspace=DISCORD_GUILD, external_id="4242", user=approver
    )
    task = dead_letter_task(worker)
    dm = doors.discord_command(client, secrets, "retry", task.pk, user_id="4242", guild=None)
    assert "not linked" in dm.json()["data"]["content"]
    assert _untouched(task)
    click = doors.discord_click(client, secrets, "retry", task.pk, user_id="4242")
    assert click.json()["type"] == 7
    assert _retried(task)


def test_the_same_id_may_be_linked_once_per_workspace(approver, viewer):
    from django.db import IntegrityError, transaction

    ChatLink.objects.create(platform="slack", external_id="U1", user=approver)
    ChatLink.objects.create(platform="slack", workspace="T1", external_id="U1", user=viewer)
    ChatLink.objects.create(platform="slack", workspace="T2", external_id="U1", user=viewer)
    with pytest.raises(IntegrityError), transaction.atomic():
        ChatLink.objects.create(platform="slack", workspace="T1", external_id="U1", user=approver)


# --- `vibe link --workspace` --------------------------------------------------------------------


def _vibe(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("vibe", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def test_vibe_link_with_a_workspace(approver, viewer):
    assert _vibe("link", "slack", "U024BE7LH", "alice", "--workspace", "T024BE7LD") == (
        "linked slack:U024BE7LH in T024BE7LD → alice"
    )
    assert _vibe("link", "slack", "U024BE7LH", "vera") == "linked slack:U024BE7LH → vera"
    assert _vibe("link", "slack", "U024BE7LH", "vera", "--workspace", "T024BE7LD") == (
        "re-linked slack:U024BE7LH in T024BE7LD → vera"
    )
    links = ChatLink.objects.order_by("workspace").values_list("workspace", "user__username")
    assert list(links) == [("", "vera"), ("T024BE7LD", "vera")]
    guild = "197038439483310086"
    _vibe("link", "discord", "80351110224678912", "alice", "--workspace", guild)
    assert ChatLink.objects.get(platform="discord").workspace == guild
    for platform, user_id, bad in (
        ("slack", "U024BE7LH", "not-a-team"),
        ("slack", "U024BE7LH", "E0ORG"),
        ("discord", "80351110224678912", "T024BE7LD"),
    ):
        with pytest.raises(CommandError) as excinfo:
            _vibe("link", platform, user_id, "alice", "--workspace", bad)
        assert excinfo.value.returncode == 2


def test_vibe_unlink_one_workspace_or_all(approver):
    _vibe("link", "slack", "U024BE7LH", "alice")
    _vibe("link", "slack", "U024BE7LH", "alice", "--workspace", "T1A")
    _vibe("link", "slack", "U024BE7LH", "alice", "--workspace", "T2B")
    assert _vibe("unlink", "slack", "U024BE7LH", "--workspace", "T1A") == (
        "unlinked slack:U024BE7LH in T1A"
    )
    with pytest.raises(CommandError, match="is not linked in T1A"):
        _vibe("unlink", "slack", "U024BE7LH", "--workspace", "T1A")
    assert _vibe("unlink", "slack", "U024BE7LH") == "unlinked slack:U024BE7LH"
    assert not ChatLink.objects.exists()


# --- The system check ---------------------------------------------------------------------------


def _our_warnings() -> set[str]:
    return {m.id for m in checks.run_checks() if m.id and m.id.startswith("chatops.")}


def test_check_warns_when_chat_is_open_to_any_workspace(settings):
    assert _our_warnings() == {"chatops.W001", "chatops.W002"}  # both secrets set, no ids
    settings.VIBE_SLACK_TEAM_IDS = [SLACK_TEAM]
    assert _our_warnings() == {"chatops.W002"}
    settings.VIBE_DISCORD_GUILD_IDS = [DISCORD_GUILD]
    assert _our_warnings() == set()
    settings.VIBE_SLACK_TEAM_IDS = []
    settings.VIBE_SLACK_ENTERPRISE_IDS = [SLACK_ENTERPRISE]  # a Grid org binds too
    assert _our_warnings() == set()
    settings.VIBE_SLACK_SIGNING_SECRET = ""
    settings.VIBE_DISCORD_PUBLIC_KEY = ""
    settings.VIBE_DISCORD_GUILD_IDS = []
    assert _our_warnings() == set()  # no chat door at all: nothing to bind
