"""Red means a person is needed: an error belongs to its attempt. Once a task moves on
(running again, completed) its error shows under that attempt in the runs list, not on its card
or as its state; the error-type filter matches tasks whose current state is that failure. And
the smaller courtesies: "Needs an Approver", worded confirmations, "Nothing here." kept."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task

pytestmark = pytest.mark.django_db


def attempt(task: Task, worker_id: str = "@backend-1") -> Task:
    claimed = lifecycle.claim_next(worker_id)
    assert claimed is not None and claimed.pk == task.pk, claimed
    Run.objects.create(
        task=task, worker_id=worker_id, attempt=claimed.attempt_count + 1, agent="simulated"
    )
    return claimed


def fail_attempt(task: Task, error_type: str = "timeout", error: str = "killed after 900 s"):
    claimed = attempt(task)
    Run.objects.filter(task=task, finished_at__isnull=True).update(
        finished_at=timezone.now(), outcome=error_type, exit_code=-9
    )
    lifecycle.fail(
        task.pk,
        worker_id="@backend-1",
        token=claimed.claim_token,
        error_type=error_type,
        error=error,
    )
    return Task.objects.get(pk=task.pk)


def submit(goal: str = "Speed up the search index", **kwargs) -> Task:
    kwargs.setdefault("pipeline", "none")
    kwargs.setdefault("max_attempts", 3)
    return lifecycle.submit(goal, lane="backend", actor="cli", priority=100, **kwargs)


def card(client, pk: int, **params) -> str:
    html = client.get(reverse("tasks_app:board"), params).content.decode()
    match = re.search(rf'<article class="card[^"]*" id="card-{pk}".*?</article>', html, re.S)
    return match.group(0) if match else ""


def test_a_failed_attempt_waiting_to_retry_is_amber_not_red(client, viewer):
    task = fail_attempt(submit())
    assert task.status == Status.PENDING and task.not_before is not None
    client.force_login(viewer)
    html = card(client, task.pk)
    assert '<p class="card-retrying">timeout · retrying</p>' in html
    assert "card-error" not in html
    detail = client.get(task.get_absolute_url()).content.decode()
    assert "error-box-retrying" in detail and "Last attempt failed, retrying: timeout" in detail


def test_a_running_attempt_does_not_show_the_previous_attempts_error_as_its_state(client, viewer):
    task = fail_attempt(submit())
    Task.objects.filter(pk=task.pk).update(not_before=None)  # the backoff is over
    attempt(task)
    client.force_login(viewer)
    assert "card-error" not in card(client, task.pk) and "retrying" not in card(client, task.pk)
    detail = client.get(task.get_absolute_url()).content.decode()
    assert "error-box" not in detail and "Last error" not in detail
    # The error is still there, under the attempt that failed with it.
    runs = detail.split('<div class="runs"')[1]
    first_run = runs.split('<details class="run"')[1]
    assert "This attempt failed: timeout." in first_run
    assert "killed after 900 s" in first_run
    assert "This attempt failed" not in runs.split('<details class="run"')[2]


def test_a_completed_task_keeps_no_red_only_its_runs_list_remembers(client, viewer):
    task = fail_attempt(submit())
    Task.objects.filter(pk=task.pk).update(not_before=None)
    claimed = attempt(task)
    lifecycle.complete(task.pk, worker_id="@backend-1", token=claimed.claim_token, result={})
    task.refresh_from_db()
    assert task.status == Status.COMPLETED and task.last_error_type == "timeout"
    client.force_login(viewer)
    html = card(client, task.pk)
    assert html and "card-error" not in html and "timeout" not in html
    detail = client.get(task.get_absolute_url()).content.decode()
    assert "error-box" not in detail
    assert "This attempt failed: timeout." in detail


def test_a_dead_letter_task_shows_its_error_in_red(client, viewer):
    task = fail_attempt(submit(max_attempts=1), error_type="agent_exit", error="Traceback: boom")
    assert task.status == Status.DEAD_LETTER
    client.force_login(viewer)
    assert '<p class="card-error">agent_exit</p>' in card(client, task.pk)
    detail = client.get(task.get_absolute_url()).content.decode()
    assert '<div class="error-box">' in detail and "Last error: agent_exit" in detail
    # Its text is shown once, in the box, not again under the run.
    assert detail.count("Traceback: boom") == 1


def test_the_error_filter_matches_only_tasks_whose_state_is_that_failure(client, viewer):
    backing_off = fail_attempt(submit("Backing off"))
    dead = fail_attempt(submit("Dead", max_attempts=1))
    done = fail_attempt(submit("Done since"))
    assert backing_off.not_before > timezone.now()  # not claimable while it backs off
    Task.objects.filter(pk=done.pk).update(not_before=None)
    claimed = attempt(done)
    lifecycle.complete(done.pk, worker_id="@backend-1", token=claimed.claim_token, result={})
    running = fail_attempt(submit("Running again"))
    Task.objects.filter(pk=running.pk).update(not_before=None)
    attempt(running)
    client.force_login(viewer)
    for params in ({"error": "timeout"}, {"q": "error:timeout"}):
        html = client.get(reverse("tasks_app:board"), params).content.decode()
        shown = {int(pk) for pk in re.findall(r'<article class="card[^"]*" id="card-(\d+)"', html)}
        assert shown == {backing_off.pk, dead.pk}, params


def test_the_board_filters_on_every_error_type_reviews_included(client, viewer):
    """The filter lists the one catalogue: the board's copy lacked review_cancelled."""
    stuck = submit("Stuck behind a cancelled review")
    Task.objects.filter(pk=stuck.pk).update(
        status=Status.BLOCKED, last_error_type="review_cancelled"
    )
    client.force_login(viewer)
    for params in ({"error": "review_cancelled"}, {"q": "error:review_cancelled"}):
        response = client.get(reverse("tasks_app:board"), params)
        html = response.content.decode()
        shown = {int(pk) for pk in re.findall(r'<article class="card[^"]*" id="card-(\d+)"', html)}
        assert shown == {stuck.pk}, params
        assert "is ignored" not in html, params
    assert '<option value="review_cancelled"' in html


def test_an_operator_sees_that_an_approver_is_needed(client, operator, approver):
    risky = lifecycle.submit("Rotate the keys", lane="backend", risk="high", actor="cli")
    client.force_login(operator)
    html = card(client, risky.pk)
    assert "Needs an Approver" in html and "Approve task" not in html
    assert "Needs an Approver" in client.get(risky.get_absolute_url()).content.decode()
    client.force_login(approver)
    html = card(client, risky.pk)
    assert "Needs an Approver" not in html and f"Approve task {risky.pk}" in html


def test_cancel_asks_in_words_that_say_what_each_button_does(client, operator):
    task = submit()
    client.force_login(operator)
    html = card(client, task.pk)
    assert 'data-confirm-yes="Cancel task" data-confirm-no="Keep"' in html
    detail = client.get(task.get_absolute_url()).content.decode()
    assert 'data-confirm-yes="Cancel task" data-confirm-no="Keep"' in detail
    page = client.get(reverse("tasks_app:board")).content.decode()
    assert '<dialog id="confirm-dialog"' in page


def test_every_column_keeps_its_nothing_here_for_when_its_last_card_moves_away(client, viewer):
    task = submit()
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:board")).content.decode()
    pending = html.split('id="cards-pending"')[1].split("</section>")[0]
    assert f'id="card-{task.pk}"' in pending and '<p class="empty">Nothing here.</p>' in pending
    assert html.count('<p class="empty">Nothing here.</p>') == 7


def test_the_columns_that_need_a_person_come_first(client, viewer):
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:board")).content.decode()
    order = re.findall(r'id="cards-(\w+)"', html)
    assert order[:3] == ["awaiting_approval", "blocked", "dead_letter"]
    assert order[3:] == ["pending", "in_progress", "review_needed", "completed"]
