"""Delivery from chat: `/vibe merge`, `/vibe rework`, and the Merge button on a notification.

Signed Slack requests to the real views; a real git repository with a bare remote behind the merge
(the same hosts as the workers' delivery tests); Slack's response_url stood in for on 127.0.0.1.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from chatops_app.grammar import execute
from chatops_app.models import ChatLink, Notification
from chatops_app.slack.render import notification_message as slack_message
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task
from tests.chatops_app.factories import slack_post
from tests.chatops_app.test_slack_interactions import ResponseUrlStandIn, _payload, click
from tests.workers_app.test_delivery import build_and_finish, teammate_pushes
from tests.workers_app.test_remote import Hosts
from workers_app.models import Worker

pytestmark = pytest.mark.django_db
SECRET = "test-slack-signing-secret"


@pytest.fixture(autouse=True)
def slack_secret(settings) -> None:
    settings.VIBE_SLACK_SIGNING_SECRET = SECRET


@pytest.fixture
def hosts(tmp_path, settings) -> Hosts:
    settings.VIBE_GIT_REMOTE = None
    settings.VIBE_BASE_BRANCH = ""
    settings.VIBE_MERGE_STYLE = "merge"
    Worker.objects.create(worker_id="@b", lane="backend")
    return Hosts(tmp_path, settings)


@pytest.fixture
def response_url():
    stand_in = ResponseUrlStandIn()
    yield stand_in
    stand_in.close()


def awaiting_merge(goal: str = "Add hello", files: dict | None = None) -> Task:
    task = lifecycle.submit(goal, lane="backend", actor="cli", pipeline="none", delivery="merge")
    task = build_and_finish(task, files or {"hello.txt": "hi\n"})
    assert task.delivery_state == "awaiting_merge"
    return task


def vibe(client, text: str, user_id: str) -> dict:
    body = urlencode({"command": "/vibe", "text": text, "user_id": user_id, "team_id": "T1"})
    response = slack_post(client, "chatops_app:slack_commands", body.encode(), SECRET)
    assert response.status_code == 200
    return response.json()


def text_of(message: dict) -> str:
    return message.get("text", "") + str(message.get("blocks", ""))


def test_slash_merge_by_an_approver_merges_and_an_operator_is_refused(
    client, hosts, approver, operator
):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    ChatLink.objects.create(platform="slack", external_id="U0OTTO", user=operator)
    task = awaiting_merge()
    refused = vibe(client, f"merge {task.pk}", "U0OTTO")
    assert "does not have the permission to merge" in text_of(refused)
    assert Task.objects.get(pk=task.pk).status == Status.REVIEW_NEEDED

    done = vibe(client, f"merge #{task.pk}", "U0ALICE")
    assert f"Task #{task.pk} merged into main" in text_of(done)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.delivery_state) == (Status.COMPLETED, "merged")
    assert task.history.last().actor == "slack:U0ALICE"
    assert hosts.remote_head("main") == task.merge_commit


def test_a_conflicting_merge_from_chat_lists_the_files_and_offers_rebase(client, hosts, approver):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = awaiting_merge("Change the app", {"app.py": "print('mine')\n"})
    teammate_pushes(hosts, "app.py", "print('theirs')\n")
    reply = vibe(client, f"merge {task.pk}", "U0ALICE")
    assert "conflicts with main in 1 file (app.py); nothing was merged" in text_of(reply)
    assert "vibe_rebase" in text_of(reply)  # the Rebase and rework button
    assert Task.objects.get(pk=task.pk).delivery_state == "conflict"


def test_slash_rework_keeps_the_whole_comment(client, hosts, operator):
    ChatLink.objects.create(platform="slack", external_id="U0OTTO", user=operator)
    task = awaiting_merge()
    reply = vibe(client, f"rework {task.pk} Use  two spaces: and keep <b>this</b>", "U0OTTO")
    assert f"Task #{task.pk} sent back for changes" in text_of(reply)
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.PENDING
    assert task.context["findings"][0]["detail"] == "Use  two spaces: and keep <b>this</b>"
    assert task.history.last().actor == "slack:U0OTTO"


def test_rework_without_a_comment_is_the_usage_and_changes_nothing(hosts, operator):
    task = awaiting_merge()
    reply = execute(f"rework {task.pk}", user=operator, actor="slack:U0OTTO", door="slack")
    assert not reply.ok and reply.title.startswith("Say what should change")
    assert Task.objects.get(pk=task.pk).status == Status.REVIEW_NEEDED


def test_the_awaiting_merge_notification_has_a_merge_button_that_works(
    client, hosts, approver, response_url
):
    ChatLink.objects.create(platform="slack", external_id="U0ALICE", user=approver)
    task = awaiting_merge()
    note = Notification.objects.get(task=task, event="awaiting_merge", channel="slack")
    message = slack_message(note)
    assert "passed every review and awaits merge" in str(message)
    actions = [
        element["action_id"]
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]
    assert "vibe_merge" in actions
    assert click(client, _payload(task, "merge", "U0ALICE", response_url.url)).status_code == 200
    _, reply = response_url.next()
    assert f"Task #{task.pk} merged into main" in str(reply)
    assert Task.objects.get(pk=task.pk).delivery_state == "merged"
