"""Polling, for factories GitHub's webhook cannot reach: the same events, by conditional GETs."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from integrations_app.github import GitHub
from integrations_app.models import GitHubEvent, IssueComment
from integrations_app.sync import Syncer, poll
from tasks_app.choices import DeliveryState, Status
from tasks_app.models import Task
from tests.integrations_app.helpers import awaiting_merge, ready_for_pull_request
from tests.standins.github_api import REPO, send_webhook

pytestmark = pytest.mark.django_db


def test_polling_brings_a_merge_back_and_an_unchanged_answer_is_a_304(github):
    task = awaiting_merge()
    assert poll(GitHub()) == 0
    pull = f"/repos/{REPO}/pulls/{task.pr_number}"
    assert "if-none-match" not in github.calls("GET", pull)[-1].headers

    assert poll(GitHub()) == 0  # nothing changed: every GET is conditional and gets a 304
    second = github.calls("GET", pull)[-1]
    assert second.headers["if-none-match"]
    reviews = github.calls("GET", f"{pull}/reviews")[-1]
    issues = github.calls("GET", f"/repos/{REPO}/issues")[-1]
    assert reviews.headers["if-none-match"] and issues.headers["if-none-match"]

    github.merge(task.pr_number, by="maria")
    assert poll(GitHub()) == 1
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.COMPLETED, DeliveryState.MERGED)
    assert task.history.last().actor == "github:maria"
    assert GitHubEvent.objects.get().source == "poll"


def test_polling_a_closed_pull_request_blocks_the_work(github):
    task = awaiting_merge()
    github.close_pull(task.pr_number)
    poll(GitHub())
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.BLOCKED, DeliveryState.PR_CLOSED)


def test_polling_a_changes_requested_review_starts_rework(github):
    task = awaiting_merge()
    github.add_review(task.pr_number, state="APPROVED", body="nice")
    github.add_review(
        task.pr_number,
        body="Not yet",
        comments=[{"path": "app/export.py", "line": 3, "body": "off by one"}],
    )
    assert poll(GitHub()) == 1
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.context["findings"][1] | {"source": ""} == {
        "severity": "MEDIUM",
        "title": "off by one",
        "detail": "off by one",
        "file": "app/export.py",
        "line": 3,
        "source": "",
    }


def test_an_event_is_handled_once_whether_polled_or_delivered(github, client):
    payload = github.add_issue("Export to CSV", labels=("vibe",))
    assert poll(GitHub()) == 1
    assert Task.objects.count() == 1

    status, text = send_webhook(client, "issues", payload)  # the webhook, late

    assert status == 200 and text == f"duplicate: issue:{REPO}#1 was handled already"
    assert Task.objects.count() == 1 and IssueComment.objects.count() == 1
    assert poll(GitHub()) == 0


def test_a_delivered_merge_is_not_handled_again_by_the_poller(github, client):
    task = awaiting_merge()
    send_webhook(client, "pull_request", github.merge(task.pr_number))
    history = task.history.count()
    poll(GitHub())  # the poller no longer waits on this work; nothing twice either way
    assert task.history.count() == history
    assert GitHubEvent.objects.count() == 1


def test_polling_vibe_do_comments_checks_write_access(github):
    github.permissions["walt"] = "write"
    github.add_issue("Dark mode", labels=())
    github.add_issue("Drop tables", labels=())
    github.add_comment(1, "/vibe do", by="walt")
    github.add_comment(2, "/vibe do", by="rhea")  # no access
    github.add_comment(2, "just a comment", by="walt")

    assert poll(GitHub()) == 2

    task = Task.objects.get()
    assert task.github_issue == f"{REPO}#1"
    assert task.history.first().actor == "github:walt"
    assert GitHubEvent.objects.get(key__startswith="comment:", task=None).outcome.endswith(
        "no write access"
    )
    comments = github.calls("GET", f"/repos/{REPO}/issues/comments")
    assert "since=" in comments[0].path

    assert poll(GitHub()) == 0  # the cursor moved; no comment is handled twice
    assert Task.objects.count() == 1


def test_polling_waits_out_a_rate_limit(github, fake_time):
    github.add_issue("Export to CSV")
    github.rate_limit_next(seconds=20)
    syncer = Syncer(client=GitHub(clock=fake_time.clock, sleep=fake_time.sleep))

    stats = syncer.run_once(force_poll=True)

    assert stats.errors == [] and stats.polled == 1
    assert len(fake_time.slept) == 1 and 18 <= fake_time.slept[0] <= 22
    assert Task.objects.count() == 1


def test_syncgithub_once_opens_pull_requests_polls_and_comments(github):
    task = ready_for_pull_request(reviewed=False)
    github.add_issue("Export to CSV")
    out = StringIO()
    call_command("syncgithub", "--once", stdout=out)
    text = out.getvalue()
    assert f"GitHub: {REPO}" in text and "polling every 60s" in text
    assert "1 pull request(s) opened" in text and "1 event(s) from polling" in text
    task.refresh_from_db()
    assert task.delivery_state == DeliveryState.AWAITING_MERGE
    assert len(github.comments[1]) == 1  # the new issue task's link back, in the same pass
    assert IssueComment.objects.get().state == "sent"


def test_syncgithub_refuses_to_start_without_a_token(settings):
    settings.VIBE_GITHUB_TOKEN = ""
    with pytest.raises(CommandError, match="VIBE_GITHUB_TOKEN is not set"):
        call_command("syncgithub", "--once")
