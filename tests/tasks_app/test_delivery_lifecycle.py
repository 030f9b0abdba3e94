"""The lifecycle's delivery moves: where reviewed work goes, and what may move it on.

Each refusal is checked to change nothing: the status and the number of history rows stay.
"""

from __future__ import annotations

import pytest

from chatops_app.models import Notification
from tasks_app import lifecycle
from tasks_app.choices import Status, error_hint
from tasks_app.models import Task, TaskHistory
from workers_app.models import Worker
from workers_app.prompting import render_prompt

pytestmark = pytest.mark.django_db

BUILT = {
    "summary": "done",
    "branch": "vibe/abc123/task-1-add-hello",
    "head_commit": "b" * 40,
    "base_commit": "a" * 40,
    "base_branch": "main",
    "remote": "origin",
    "changed_files": [{"path": "hello.txt", "added": 1, "removed": 0}],
}
PASS = {"verdict": "PASS", "score": 90, "findings": [], "summary": "fine"}


@pytest.fixture(autouse=True)
def workers(settings) -> None:
    settings.VIBE_GITHUB_TOKEN = "ghp-test"
    for lane in ("backend", "security", "qa"):
        Worker.objects.get_or_create(worker_id=f"@{lane}-x", defaults={"lane": lane})


def run(task: Task, result: dict) -> Task:
    claimed = lifecycle.claim_next(f"@{task.lane}-x")
    assert claimed is not None and claimed.pk == task.pk
    lifecycle.complete(
        task.pk, worker_id=claimed.worker_id, token=claimed.claim_token, result=result
    )
    return Task.objects.get(pk=task.pk)


def reviewed(delivery: str, conflicts: list[str] | None = None) -> Task:
    """Work built and passed by its security audit and QA, delivered `delivery`'s way."""
    task = lifecycle.submit("Add hello", lane="backend", actor="cli", delivery=delivery)
    task = run(task, BUILT)
    assert task.status == Status.REVIEW_NEEDED
    for _ in range(2):  # security, then QA
        review = task.children.get(status=Status.PENDING)
        verdict = dict(PASS)
        if conflicts is not None:
            verdict["conflicts"] = conflicts  # the reviewer's merge check of the work
        run(review, verdict)
        task = Task.objects.get(pk=task.pk)
    return task


def state(task: Task) -> tuple:
    fresh = Task.objects.get(pk=task.pk)
    count = TaskHistory.objects.filter(task=task).count()
    return fresh.status, fresh.delivery_state, count


def test_the_default_delivery_is_the_setting(settings):
    settings.VIBE_DELIVERY = "pull_request"
    assert lifecycle.submit("x", lane="backend", actor="cli").delivery == "pull_request"
    assert lifecycle.submit("x", lane="backend", actor="cli", delivery="merge").delivery == "merge"
    with pytest.raises(lifecycle.InvalidInput, match="unknown delivery 'email'"):
        lifecycle.submit("x", lane="backend", actor="cli", delivery="email")


def test_branch_delivery_completes_when_every_review_passed():
    task = reviewed("branch")
    assert (task.status, task.delivery_state) == (Status.COMPLETED, "pushed")
    assert task.history.order_by("id").last().note == (
        f"all reviews passed; branch {BUILT['branch']} pushed to origin"
    )


def test_merge_delivery_waits_and_tells_people_with_a_merge_button():
    task = reviewed("merge")
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "awaiting_merge")
    assert task.base_branch == "main" and task.delivery_summary == "awaiting merge into main"
    assert Notification.objects.filter(task=task, event="awaiting_merge").count() == 2


def test_a_conflict_found_at_review_time_shows_on_the_work():
    task = reviewed("merge", conflicts=["app.py", "db.py"])
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "conflict")
    assert task.conflicts == ["app.py", "db.py"]
    assert task.delivery_summary == "conflicts with main in 2 files"
    assert "conflicts with main in 2 files (app.py, db.py)" in task.history.last().note


def test_pull_request_delivery_opens_then_merges():
    task = reviewed("pull_request")
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "opening_pr")
    url = "https://github.example/o/r/pull/7"
    task = lifecycle.pr_opened(task.pk, url=url, number=7, actor="github")
    assert (task.delivery_state, task.pr_number, task.pr_state) == ("awaiting_merge", 7, "open")
    assert Notification.objects.filter(task=task, event="awaiting_merge").count() == 2
    before = state(task)
    with pytest.raises(lifecycle.IllegalTransition, match="opening pull request"):
        lifecycle.pr_opened(task.pk, url=url, number=7, actor="github")
    assert state(task) == before
    task = lifecycle.merged(task.pk, actor="github:octo", merge_commit="c" * 40)
    assert (task.status, task.delivery_state, task.pr_state) == ("completed", "merged", "merged")
    assert task.merge_commit == "c" * 40


def test_a_closed_pull_request_blocks_and_a_person_can_ask_for_changes():
    task = reviewed("pull_request")
    lifecycle.pr_opened(task.pk, url="u", number=3, actor="github")
    task = lifecycle.pr_closed(task.pk, actor="github:octo")
    assert (task.status, task.delivery_state, task.last_error_type) == (
        "blocked",
        "pr_closed",
        "pr_closed",
    )
    assert "closed without merging" in task.last_error
    task = lifecycle.request_changes(task.pk, comment="Smaller, please", actor="user:alice")
    assert task.status == Status.PENDING and task.pr_number == 3
    # Reworked and reviewed again: the PR is open again, so the push updated it.
    Task.objects.filter(pk=task.pk).update(pr_state="open")
    task = run(Task.objects.get(pk=task.pk), BUILT)
    for _ in range(2):
        run(task.children.get(status=Status.PENDING), PASS)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "awaiting_merge")
    assert "pull request #3 updated" in task.history.last().note


def test_a_pull_request_that_cannot_be_opened_blocks_and_retry_opens_it_again():
    task = reviewed("pull_request")
    task = lifecycle.delivery_failed(task.pk, error="Validation Failed: no commits", actor="gh")
    assert (task.status, task.last_error_type) == (Status.BLOCKED, "pull_request_failed")
    assert "GitHub refused" in error_hint(task.last_error_type)
    task = lifecycle.retry(task.pk, actor="user:alice")
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "opening_pr")
    assert task.review_round == 0  # the reviews stand: only delivery is done again


def test_changes_requested_with_findings_keep_file_and_line():
    task = reviewed("pull_request")
    lifecycle.pr_opened(task.pk, url="u", number=9, actor="github")
    findings = [{"title": "Off by one", "detail": "use <=", "file": "a.py", "line": 12}]
    task = lifecycle.request_changes(
        task.pk, comment="See inline", actor="github:octo", findings=findings
    )
    asked = task.context["findings"]
    assert [f["title"] for f in asked] == ["See inline", "Off by one"]
    assert (asked[1]["file"], asked[1]["line"], asked[1]["severity"]) == ("a.py", 12, "MEDIUM")
    assert task.review_round == 1 and task.context["round_base"] == 1


@pytest.mark.parametrize(
    "comment, message",
    [("", "the comment is empty"), ("x" * 4001, "the limit is 4000")],
)
def test_request_changes_refuses_bad_input_and_changes_nothing(comment, message):
    task = reviewed("merge")
    before = state(task)
    with pytest.raises(lifecycle.InvalidInput, match=message):
        lifecycle.request_changes(task.pk, comment=comment, actor="user:alice")
    assert state(task) == before


def test_request_changes_only_where_it_makes_sense():
    task = reviewed("merge")
    pending = lifecycle.submit("x", lane="backend", actor="cli")
    with pytest.raises(lifecycle.IllegalTransition, match="is pending"):
        lifecycle.request_changes(pending.pk, comment="c", actor="cli")
    lifecycle.merged(task.pk, actor="cli", merge_commit="d" * 40)
    before = state(task)
    with pytest.raises(lifecycle.IllegalTransition, match="already merged"):
        lifecycle.request_changes(task.pk, comment="c", actor="cli")
    assert state(task) == before
    review = task.children.first()
    with pytest.raises(lifecycle.IllegalTransition, match="is a review"):
        lifecycle.request_changes(review.pk, comment="c", actor="cli")
    with pytest.raises(lifecycle.TaskNotFound):
        lifecycle.request_changes(10**20, comment="c", actor="cli")


def test_merge_moves_refuse_work_that_is_not_waiting():
    task = reviewed("branch")  # completed, pushed
    before = state(task)
    for move in (
        lambda: lifecycle.pr_closed(task.pk, actor="gh"),
        lambda: lifecycle.merged(task.pk, actor="gh"),
        lambda: lifecycle.record_conflicts(task.pk, ["a"], actor="gh"),
        lambda: lifecycle.delivery_failed(task.pk, error="e", actor="gh"),
    ):
        with pytest.raises(lifecycle.IllegalTransition):
            move()
    assert state(task) == before
    with pytest.raises(lifecycle.InvalidInput):
        lifecycle.pr_opened(task.pk, url="u", number=0, actor="gh")


def test_pull_request_delivery_without_a_token_blocks_at_once_and_says_why(settings):
    settings.VIBE_GITHUB_TOKEN = ""
    task = reviewed("pull_request")
    assert (task.status, task.delivery_state) == (Status.BLOCKED, "failed")
    assert "VIBE_GITHUB_TOKEN is not set" in task.last_error
    before = state(task)
    with pytest.raises(lifecycle.InvalidInput, match="VIBE_GITHUB_TOKEN is not set"):
        lifecycle.retry(task.pk, actor="user:alice")
    assert state(task) == before
    settings.VIBE_GITHUB_TOKEN = "ghp-test"
    task = lifecycle.retry(task.pk, actor="user:alice")
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "opening_pr")


def test_the_action_table_offers_what_fits_the_task_and_the_person(approver, operator, viewer):
    from tasks_app.actions import ACTIONS, task_actions_for

    task = reviewed("merge")
    names = [a.name for a in task_actions_for(task, approver)]
    assert names == ["cancel", "merge", "rework"]
    assert [a.name for a in task_actions_for(task, operator)] == ["cancel", "rework"]
    assert task_actions_for(task, viewer) == []
    for action in ACTIONS.values():  # every action names the statuses it applies to
        assert action.statuses and set(action.statuses) <= {s.value for s in Status}
    lifecycle.record_conflicts(task.pk, ["a.py"], actor="cli")
    task = Task.objects.get(pk=task.pk)
    assert [a.name for a in task_actions_for(task, operator)] == ["cancel", "rework", "rebase"]


@pytest.mark.parametrize(
    ("actor", "who"), [("cli", "cli"), ("user:alice", "alice"), ("slack:U1", "U1")]
)
def test_changes_asked_for_say_who_asked_from_every_door(actor, who):
    task = reviewed("branch")
    task = lifecycle.request_changes(task.pk, comment="Rename the helper", actor=actor)
    assert task.context["summaries"] == [f"Changes requested by {who}"]
    prompt = render_prompt(task)
    assert f"{who} asked for changes; fix these findings first" in prompt
    assert "a review failed" not in prompt
