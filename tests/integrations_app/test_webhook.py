"""GitHub's webhook: signed deliveries move the work; forged, unsigned and replayed ones don't."""

from __future__ import annotations

import pytest
from django.utils import timezone

from integrations_app.github import GitHub
from integrations_app.models import (
    CommentState,
    EventState,
    GitHubEvent,
    IssueComment,
    WebhookDelivery,
)
from integrations_app.sync import Syncer, send_due_comments
from tasks_app import lifecycle
from tasks_app.choices import DeliveryState, Status
from tasks_app.models import Task
from tests.integrations_app.conftest import BASE_URL
from tests.integrations_app.helpers import awaiting_merge, snapshot
from tests.standins.github_api import REPO, send_webhook, sign
from workers_app.models import Worker

pytestmark = pytest.mark.django_db


# --- Pull requests ----------------------------------------------------------------------------


def test_a_merged_pull_request_completes_the_work(github, client):
    task = awaiting_merge()
    status, text = send_webhook(client, "pull_request", github.merge(task.pr_number))

    assert (status, text) == (200, f"task #{task.pk} completed: pull request #1 merged")
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.delivery_state == DeliveryState.MERGED
    assert task.merge_commit == "m" * 40
    assert task.history.last().actor == "github:maria"


def test_a_pull_request_closed_without_merging_blocks_the_work(github, client):
    task = awaiting_merge()
    status, text = send_webhook(client, "pull_request", github.close_pull(1))

    assert status == 200 and "closed without merging" in text
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.BLOCKED, DeliveryState.PR_CLOSED)


def test_changes_requested_starts_a_rework_round_with_file_and_line_findings(github, client):
    task = awaiting_merge()
    payload = github.add_review(
        task.pr_number,
        body="Please handle empty exports.",
        comments=[
            {"path": "app/export.py", "line": 42, "body": "HIGH: this crashes on no rows"},
            {"path": "tests/test_export.py", "line": 7, "body": "Add a test for it"},
        ],
    )
    status, text = send_webhook(client, "pull_request_review", payload)

    assert status == 200 and "rework round with 2 finding(s) from rita" in text
    assert github.calls("GET", f"/repos/{REPO}/pulls/1/reviews/{payload['review']['id']}/comments")
    task.refresh_from_db()
    assert task.status == Status.PENDING
    findings = task.context["findings"]
    assert findings[0]["detail"] == "Please handle empty exports."
    assert {(f["file"], f["line"], f["severity"]) for f in findings[1:]} == {
        ("app/export.py", 42, "HIGH"),
        ("tests/test_export.py", 7, "MEDIUM"),
    }
    assert findings[1]["title"] == "this crashes on no rows"
    assert task.history.last().actor == "github:rita"


def test_an_approving_review_changes_nothing(github, client):
    task = awaiting_merge()
    before = snapshot()
    payload = github.add_review(task.pr_number, state="APPROVED", body="LGTM")
    status, text = send_webhook(client, "pull_request_review", payload)
    assert status == 200 and text.startswith("ignored")
    assert snapshot() == before


def test_review_comments_github_cannot_give_now_are_fetched_by_the_sync_loop(github, client):
    task = awaiting_merge()
    payload = github.add_review(
        1, body="Fix it", comments=[{"path": "a.py", "line": 1, "body": "here"}]
    )
    github.fail_next(502, {"message": "Server Error"}, path="/comments")

    status, text = send_webhook(client, "pull_request_review", payload)

    assert status == 202 and text.startswith("will retry")
    task.refresh_from_db()
    assert task.status == Status.REVIEW_NEEDED  # nothing moved yet, nothing lost either
    event = GitHubEvent.objects.get()
    assert event.state == EventState.PENDING
    GitHubEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())

    Syncer().run_once()

    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.context["findings"][1]["file"] == "a.py"
    assert GitHubEvent.objects.get().state == EventState.DONE


def test_a_move_the_lifecycle_refuses_is_answered_200_with_its_message(github, client):
    task = awaiting_merge()
    web = client
    send_webhook(web, "pull_request", github.close_pull(1))
    github.pulls[1]["closed_at"] = "2030-01-01T00:00:00Z"  # closed again: a new event
    again = github.pr_payload("closed", github.pulls[1], "maria")
    status, text = send_webhook(web, "pull_request", again)
    assert status == 200
    assert f"task {task.pk} is blocked" in text
    task.refresh_from_db()
    assert task.delivery_state == DeliveryState.PR_CLOSED


# --- Refusals ---------------------------------------------------------------------------------


def test_forged_unsigned_and_replayed_webhooks_change_nothing(github, client):
    task = awaiting_merge()
    web = client
    payload = github.merge(task.pr_number)
    before = snapshot()

    assert send_webhook(web, "pull_request", payload, secret="not-the-secret")[0] == 401
    assert send_webhook(web, "pull_request", payload, secret=None)[0] == 401
    forged = sign(b"another body")
    assert send_webhook(web, "pull_request", payload, signature=forged)[0] == 401
    assert send_webhook(web, "pull_request", payload, signature="sha256=\u00e9")[0] == 401
    assert snapshot() == before
    assert not WebhookDelivery.objects.exists()

    assert send_webhook(web, "pull_request", payload, delivery="d-1")[0] == 200
    after = snapshot()
    task.refresh_from_db()
    assert task.status == Status.COMPLETED

    # The same delivery again, and the same event in a new delivery: both change nothing.
    assert send_webhook(web, "pull_request", payload, delivery="d-1") == (
        200,
        "duplicate: this delivery was received before",
    )
    status, text = send_webhook(web, "pull_request", payload, delivery="d-2")
    assert status == 200 and text.startswith("duplicate")
    assert snapshot() == after


def test_without_a_secret_every_delivery_is_refused_with_503(github, client, settings):
    settings.VIBE_GITHUB_WEBHOOK_SECRET = ""
    before = snapshot()
    status, text = send_webhook(client, "ping", {"zen": "hi"})
    assert status == 503 and "VIBE_GITHUB_WEBHOOK_SECRET" in text
    assert snapshot() == before


def test_a_signed_body_that_is_not_json_is_a_400(github, client):
    web = client
    assert send_webhook(web, "issues", b"{not json")[0] == 400
    assert send_webhook(web, "issues", b"[1, 2]")[0] == 400
    assert not WebhookDelivery.objects.exists()


def test_other_events_are_ignored_and_ping_answers(github, client):
    web = client
    assert send_webhook(web, "ping", {"zen": "Keep it logically awesome."}) == (200, "pong")
    status, text = send_webhook(web, "push", {"ref": "refs/heads/main", "repository": repo()})
    assert (status, text) == (200, "ignored: push")
    status, text = send_webhook(web, "issues", {"action": "labeled", "repository": other()})
    assert status == 200 and "is not octo/factory" in text
    assert not Task.objects.exists()


def test_only_post_is_allowed(github, client):
    assert client.get("/integrations/github/webhook").status_code == 405


# --- Issues -----------------------------------------------------------------------------------


def test_a_labelled_issue_becomes_a_task_and_gets_a_comment_back(github, client):
    payload = github.add_issue(
        "Export to CSV", "Users want CSV.", labels=("vibe", "vibe:frontend"), by="ivan"
    )
    status, text = send_webhook(client, "issues", payload)

    task = Task.objects.get()
    assert (status, text) == (200, f"issue {REPO}#1 became task #{task.pk}")
    assert task.goal == "Export to CSV\n\nUsers want CSV."
    assert task.lane == "frontend"
    assert task.github_issue == f"{REPO}#1"
    assert task.delivery == "pull_request"
    assert task.history.first().actor == "github:ivan"

    # The comment is a durable row; the sync loop sends it, however long GitHub is down.
    row = IssueComment.objects.get()
    assert row.state == CommentState.PENDING
    github.fail_next(503, {"message": "down"}, path="/comments")
    assert send_due_comments(GitHub()) == 1
    assert IssueComment.objects.get().state == CommentState.PENDING
    IssueComment.objects.update(next_attempt_at=timezone.now())
    send_due_comments(GitHub())

    row.refresh_from_db()
    assert row.state == CommentState.SENT
    posted = github.comments[1]
    assert len(posted) == 1
    assert f"[task #{task.pk}]({BASE_URL}{task.get_absolute_url()})" in posted[0]["body"]


def test_a_comment_github_took_before_timing_out_is_not_posted_twice(github, client):
    send_webhook(client, "issues", github.add_issue("Export to CSV"))
    row = IssueComment.objects.get()
    github.comments[1].append({"id": 9, "body": row.body})  # GitHub got it; we did not hear
    IssueComment.objects.update(attempts=1)

    send_due_comments(GitHub())

    assert len(github.comments[1]) == 1
    assert not github.calls("POST", f"/repos/{REPO}/issues/1/comments")
    row.refresh_from_db()
    assert (row.state, row.comment_id) == (CommentState.SENT, 9)


def test_an_issue_that_already_has_a_task_gets_no_second(github, client):
    web = client
    payload = github.add_issue("Export to CSV")
    send_webhook(web, "issues", payload)
    payload["label"] = {"name": "VIBE"}  # labelled again (another delivery, same issue)
    status, text = send_webhook(web, "issues", payload)
    assert status == 200 and text.startswith("duplicate")
    assert Task.objects.count() == 1 and IssueComment.objects.count() == 1


def test_other_labels_and_pull_requests_are_not_taken_on(github, client):
    web = client
    payload = github.add_issue("Not for us", labels=("bug",))
    assert send_webhook(web, "issues", payload)[1].startswith("ignored: label 'bug'")
    payload = github.add_issue("A PR", labels=("vibe",))
    payload["issue"]["pull_request"] = {"url": "x"}
    assert send_webhook(web, "issues", payload)[1] == "ignored: not an open issue"
    assert not Task.objects.exists()


def test_vibe_do_from_someone_with_write_access_makes_a_task(github, client):
    github.permissions["walt"] = "write"
    github.add_issue("Dark mode", "Please.", labels=())
    payload = github.add_comment(1, "/vibe do frontend", by="walt")

    status, text = send_webhook(client, "issue_comment", payload)

    task = Task.objects.get()
    assert (status, text) == (200, f"issue {REPO}#1 became task #{task.pk}")
    assert task.lane == "frontend" and task.github_issue == f"{REPO}#1"
    assert task.history.first().actor == "github:walt"
    assert github.calls("GET", f"/repos/{REPO}/collaborators/walt/permission")


@pytest.mark.parametrize("permission", ["read", "triage", None])
def test_vibe_do_from_someone_without_write_access_does_nothing(github, client, permission):
    if permission:
        github.permissions["rhea"] = permission
    github.add_issue("Delete the database", labels=())
    payload = github.add_comment(1, "/vibe do", by="rhea")
    before = snapshot()

    status, text = send_webhook(client, "issue_comment", payload)

    assert status == 200 and "no write access" in text
    assert not Task.objects.exists() and not IssueComment.objects.exists()
    assert snapshot()["tasks"] == before["tasks"]


def test_an_ordinary_comment_is_ignored(github, client):
    github.add_issue("Dark mode", labels=())
    status, text = send_webhook(client, "issue_comment", github.add_comment(1, "+1"))
    assert status == 200 and text.startswith("ignored")
    assert not github.calls("GET", f"/repos/{REPO}/collaborators/walt/permission")


# --- Over real HTTP -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_stand_in_can_deliver_to_a_live_server(github, live_server):
    payload = github.add_issue("Export to CSV")
    status, text = send_webhook(live_server.url, "issues", payload)
    assert status == 200 and "became task" in text
    assert Task.objects.get().github_issue == f"{REPO}#1"


# --- Helpers ----------------------------------------------------------------------------------


def repo() -> dict:
    return {"full_name": REPO}


def other() -> dict:
    return {"full_name": "someone/else"}


def test_a_merge_during_a_rework_round_applies_once_the_work_waits_again(github, client):
    task = awaiting_merge(reviewed=False)
    send_webhook(client, "pull_request_review", github.add_review(1, body="Rename it"))
    task.refresh_from_db()
    assert task.status == Status.PENDING  # being reworked

    status, text = send_webhook(client, "pull_request", github.merge(1))

    assert status == 202 and "waits" in text
    task.refresh_from_db()
    assert task.status == Status.PENDING
    claimed = lifecycle.claim_next(Worker.objects.get(pk="@backend-1"))
    lifecycle.complete(
        claimed.pk, worker_id="@backend-1", token=claimed.claim_token, result={"summary": "ok"}
    )
    task.refresh_from_db()
    assert task.delivery_state == DeliveryState.AWAITING_MERGE  # its push updated the PR
    GitHubEvent.objects.filter(state=EventState.PENDING).update(next_attempt_at=timezone.now())

    Syncer().run_once()

    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.COMPLETED, DeliveryState.MERGED)
