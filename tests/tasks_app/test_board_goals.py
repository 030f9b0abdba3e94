"""Goals first: a goal's reviews live in its card as a stage strip, review cards are hidden
unless "Show reviews" is on, and the metrics and throughput count goals with the reviews apart;
the board's query count stays the same however many reviews are folded in."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task

pytestmark = pytest.mark.django_db

PASS = {"verdict": "PASS", "score": 92, "findings": [], "summary": "looks fine"}
FAIL = {
    "verdict": "FAIL",
    "score": 40,
    "findings": [{"severity": "HIGH", "title": "No CSRF check", "file": "api.py"}],
    "summary": "one problem",
}


def build(goal: str = "Add a health endpoint", lane: str = "backend", **submit) -> Task:
    """A goal its builder finished: in review, its first review spawned."""
    submit.setdefault("priority", 100)  # before any goal sent back for rework
    task = lifecycle.submit(goal, lane=lane, actor="cli", **submit)
    claimed = lifecycle.claim_next(f"@{lane}-1")
    assert claimed.pk == task.pk
    lifecycle.complete(task.pk, worker_id=f"@{lane}-1", token=claimed.claim_token, result={})
    return Task.objects.get(pk=task.pk)


def review(goal: Task, worker_id: str, result: dict) -> Task:
    """The reviewer claims the goal's open review and hands in `result`."""
    claimed = lifecycle.claim_next(worker_id)
    assert claimed is not None and claimed.parent_id == goal.pk, claimed
    lifecycle.complete(claimed.pk, worker_id=worker_id, token=claimed.claim_token, result=result)
    return Task.objects.get(pk=claimed.pk)


def card_html(html: str, pk: int) -> str:
    match = re.search(rf'<article class="card[^"]*" id="card-{pk}".*?</article>', html, re.S)
    assert match, f"no card for task {pk}"
    return match.group(0)


def board(client, **params) -> str:
    response = client.get(reverse("tasks_app:board"), params)
    assert response.status_code == 200
    return response.content.decode()


def test_a_goals_reviews_live_in_its_card_as_a_stage_strip(client, viewer):
    goal = build()
    security = review(goal, "@security-1", PASS)
    qa = Task.objects.get(parent=goal, lane="qa")
    client.force_login(viewer)
    html = board(client)
    assert f'id="card-{security.pk}"' not in html and f'id="card-{qa.pk}"' not in html
    card = card_html(html, goal.pk)
    strip = re.search(r'<ol class="stages".*?</ol>', card, re.S).group(0)
    steps = re.findall(r'<li class="stage-step ([^"]+)">(.*?)</li>', strip, re.S)
    names = [re.search(r'stage-name">([^<]+)<', body).group(1) for _, body in steps]
    assert names == ["Builder", "Security", "QA"]
    assert "stage-done" in steps[0][0]
    assert "stage-passed" in steps[1][0] and "PASS" in steps[1][1] and ">92<" in steps[1][1]
    assert "stage-queued" in steps[2][0] and "queued" in steps[2][1]
    assert 'aria-label="Stages of task' in strip


def test_show_reviews_puts_the_review_cards_back(client, viewer):
    goal = build()
    security = Task.objects.get(parent=goal)
    client.force_login(viewer)
    html = board(client, reviews="1")
    review_card = card_html(html, security.pk)
    assert "review of" in review_card and f"#{goal.pk}</a>" in review_card
    assert 'id="f-reviews" type="checkbox" name="reviews" value="1" checked' in html
    assert 'id="count-pending">1<' in html  # the queued review is counted with its card
    assert 'id="count-pending">0<' in board(client)


def test_a_stuck_review_keeps_its_own_card_where_a_person_is_needed(client, operator):
    goal = build()
    claimed = lifecycle.claim_next("@security-1")
    lifecycle.fail(
        claimed.pk, worker_id="@security-1", token=claimed.claim_token, error_type="agent_missing"
    )
    stuck = Task.objects.get(pk=claimed.pk)
    assert stuck.status == Status.DEAD_LETTER
    client.force_login(operator)
    html = board(client)
    dead_column = html.split('id="cards-dead_letter"')[1].split("</section>")[0]
    assert f'id="card-{stuck.pk}"' in dead_column
    assert f'aria-label="Retry task {stuck.pk}"' in dead_column
    assert "stage-stuck" in card_html(html, goal.pk)
    assert re.search(r"Dead letter</dt><dd>1", html)


def test_a_failed_review_shows_as_last_round_while_the_goal_is_reworked(client, viewer):
    goal = build()
    review(goal, "@security-1", FAIL)
    goal.refresh_from_db()
    assert goal.status == Status.PENDING and goal.review_round == 1
    client.force_login(viewer)
    card = card_html(board(client), goal.pk)
    assert "stage-rework" in card and "reworking" in card
    assert "stage-earlier" in card and "FAIL" in card and "last round" in card


def test_a_review_moving_changes_its_goals_card_although_the_goal_did_not(client, viewer):
    """The card cache is keyed by the goal's row and its strip: a review's verdict must show."""
    goal = build()
    client.force_login(viewer)
    assert "stage-queued" in card_html(board(client), goal.pk)
    updated_at = Task.objects.get(pk=goal.pk).updated_at
    lifecycle.claim_next("@security-1")
    Task.objects.filter(pk=goal.pk).update(updated_at=updated_at)  # the goal's row unchanged
    assert "stage-running" in card_html(board(client), goal.pk)


def test_completed_today_and_throughput_count_goals_with_reviews_apart(client, viewer):
    goal = build()
    review(goal, "@security-1", PASS)
    review(goal, "@qa-1", {"verdict": "PASS", "score": 100, "findings": []})
    goal.refresh_from_db()
    assert goal.status == Status.COMPLETED
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:metrics"), HTTP_HX_REQUEST="true").content.decode()
    assert re.search(r"Completed today</dt><dd>1</dd>", html)
    assert "+2 reviews" in html
    html = client.get(reverse("tasks_app:throughput")).content.decode()
    assert re.search(r"Backend</span> 1 completed, 0 failed", html)
    assert re.search(r"Reviews and QA checks</span> 2 completed, 0 failed", html)
    assert "Security</span>" not in html and ">QA</span>" not in html


def test_the_in_progress_tile_counts_goals_and_names_running_reviews(client, viewer):
    build()
    lifecycle.claim_next("@security-1")
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:metrics"), HTTP_HX_REQUEST="true").content.decode()
    assert re.search(r"In progress</dt><dd>0</dd>", html)
    assert "+1 review running" in html
    assert re.search(r"Review</dt><dd>1</dd>", html)


def _seed_goals(n: int) -> None:
    """Goals in review (security passed, QA queued) and completed ones, with their reviews."""
    for i in range(n):
        goal = build(f"Goal {i}")
        review(goal, "@security-1", PASS)
        if i % 2:  # whichever QA review is next: the board does not care which goal it is
            claimed = lifecycle.claim_next("@qa-1")
            lifecycle.complete(
                claimed.pk,
                worker_id="@qa-1",
                token=claimed.claim_token,
                result={"verdict": "PASS", "score": 100, "findings": []},
            )


def _queries(client, url: str, **headers) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, **headers).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "params,headers",
    [
        ({}, {}),
        ({}, {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "live"}),
        ({"reviews": "1"}, {}),
        ({"q": "lane:backend Goal"}, {}),
    ],
)
def test_the_board_query_count_stays_constant_with_reviews_folded_in(
    client, viewer, django_assert_num_queries, params, headers
):
    client.force_login(viewer)
    url = reverse("tasks_app:board") + ("?" + "&".join(f"{k}={v}" for k, v in params.items()))
    _seed_goals(2)
    small = _queries(client, url, **headers)
    _seed_goals(12)
    assert Task.objects.exclude(stage="").count() >= 14
    with django_assert_num_queries(small):
        client.get(url, **headers)
    assert small <= 22
