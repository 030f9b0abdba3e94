"""Opening the pull request of reviewed work: once, with the reviews, or blocked with why."""

from __future__ import annotations

from decimal import Decimal

import pytest

from integrations_app.sync import Syncer
from tasks_app.choices import DeliveryState, Status
from tasks_app.models import Run, Task
from tests.integrations_app.conftest import BASE_URL
from tests.integrations_app.helpers import ready_for_pull_request
from tests.standins.github_api import REPO

pytestmark = pytest.mark.django_db

PULLS = f"/repos/{REPO}/pulls"


def test_reviewed_work_gets_a_pull_request_with_its_reviews_cost_and_link(github):
    task = ready_for_pull_request(github_issue=f"{REPO}#12")
    Run.objects.create(task=task, cost_usd=Decimal("0.42"))

    assert Syncer().open_pull_requests() == 1

    created = github.calls("POST", PULLS)
    assert len(created) == 1
    sent = created[0].json
    assert sent["head"] == "vibe/t1-add-csv-export"
    assert sent["base"] == "main"
    assert sent["title"] == "Add CSV export"
    body = sent["body"]
    assert "Users want their data as CSV." in body
    assert "Added /export.csv with tests." in body  # the builder's summary
    assert "**Security audit**" in body and "PASS, score 88" in body
    assert "**LOW** `app/export.py` Consider rate limiting the export endpoint" in body
    assert "**QA**" in body and "PASS, score 95" in body
    assert "**Cost:** $0.42" in body
    assert f"**Task:** [#{task.pk}]({BASE_URL}{task.get_absolute_url()})" in body
    assert "Closes #12" in body

    task.refresh_from_db()
    pr = github.pulls[1]
    assert task.status == Status.REVIEW_NEEDED
    assert task.delivery_state == DeliveryState.AWAITING_MERGE
    assert (task.pr_number, task.pr_url, task.pr_state) == (1, pr["html_url"], "open")
    assert Syncer().open_pull_requests() == 0  # nothing left to open
    assert len(github.calls("POST", PULLS)) == 1


def test_the_base_is_the_repositorys_default_branch_when_the_task_has_none(github):
    github.default_branch = "trunk"
    task = ready_for_pull_request(reviewed=False)
    Task.objects.filter(pk=task.pk).update(base_branch="")
    Syncer().open_pull_requests()
    assert github.calls("POST", PULLS)[0].json["base"] == "trunk"


def test_an_issue_of_another_repository_is_mentioned_not_closed(github):
    ready_for_pull_request(github_issue="someone/else#3", reviewed=False)
    Syncer().open_pull_requests()
    body = github.calls("POST", PULLS)[0].json["body"]
    assert "Closes" not in body and "From someone/else#3" in body


def test_an_open_pull_request_for_the_branch_is_recorded_not_opened_twice(github):
    task = ready_for_pull_request(reviewed=False)
    earlier = github.add_pull(task.branch, "main")  # say, opened before a timeout cut us off

    assert Syncer().open_pull_requests() == 1

    assert len(github.pulls) == 1
    looked_up = github.calls("GET", PULLS)
    assert looked_up and "head=octo%3Avibe%2Ft1-add-csv-export" in looked_up[0].path
    task.refresh_from_db()
    assert task.pr_number == earlier["number"]
    assert task.delivery_state == DeliveryState.AWAITING_MERGE


def test_a_pull_request_github_refuses_blocks_the_task_with_githubs_message(github):
    task = ready_for_pull_request(reviewed=False)
    refusal = {
        "message": "Validation Failed",
        "errors": [
            {"resource": "PullRequest", "code": "custom", "message": "No commits between main"}
        ],
    }
    github.fail_next(422, refusal, path="/pulls")

    Syncer().open_pull_requests()

    task.refresh_from_db()
    assert task.status == Status.BLOCKED
    assert task.delivery_state == DeliveryState.FAILED
    assert task.last_error_type == "pull_request_failed"
    assert "Validation Failed: No commits between main" in task.last_error
    assert github.pulls == {}


def test_github_down_retries_with_backoff_and_opens_exactly_once(github):
    task = ready_for_pull_request(reviewed=False)
    now = [1000.0]
    syncer = Syncer(monotonic=lambda: now[0])
    github.fail_next(503, {"message": "Service Unavailable"}, path="/pulls")

    assert syncer.open_pull_requests() == 0
    task.refresh_from_db()
    assert task.delivery_state == DeliveryState.OPENING_PR  # still waiting, not failed

    assert syncer.open_pull_requests() == 0  # backing off: GitHub is not asked again yet
    assert len(github.calls("POST", PULLS)) == 1

    now[0] += 3600
    assert syncer.open_pull_requests() == 1
    assert len(github.calls("POST", PULLS)) == 2 and len(github.pulls) == 1
    task.refresh_from_db()
    assert task.delivery_state == DeliveryState.AWAITING_MERGE


def test_a_bad_token_fails_no_task(github, settings):
    task = ready_for_pull_request(reviewed=False)
    settings.VIBE_GITHUB_TOKEN = "wrong"
    Syncer().open_pull_requests()
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, DeliveryState.OPENING_PR)
