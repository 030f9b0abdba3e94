"""Search people expect: `#19` or `19` finds the task, qualifiers (lane:, status:, worker:,
error:, risk:, delivery:) narrow the board, free text matches goals, the tiles follow the
filter, and an htmx filter change brings the Clear link and the filter messages along."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tasks_app import dashboard, lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task

pytestmark = pytest.mark.django_db


def failed(goal: str, lane: str = "backend", error_type: str = "timeout", attempts: int = 1):
    """A task whose one attempt failed: dead letter with one attempt, else pending with backoff."""
    task = lifecycle.submit(
        goal, lane=lane, actor="cli", pipeline="none", max_attempts=attempts, priority=100
    )
    claimed = lifecycle.claim_next(f"@{lane}-1")
    assert claimed.pk == task.pk
    lifecycle.fail(
        task.pk, worker_id=f"@{lane}-1", token=claimed.claim_token, error_type=error_type
    )
    return Task.objects.get(pk=task.pk)


def cards(client, **params) -> set[int]:
    """The ids of the cards on the board for these query parameters."""
    response = client.get(reverse("tasks_app:board"), params)
    assert response.status_code == 200
    return {
        int(pk)
        for pk in re.findall(
            r'<article class="card[^"]*" id="card-(\d+)"', response.content.decode()
        )
    }


@pytest.fixture
def floor(db):
    return {
        "api": lifecycle.submit("Cache the pricing API", lane="backend", actor="cli"),
        "ui": lifecycle.submit("Dark mode for settings", lane="frontend", actor="cli"),
        "risky": lifecycle.submit("Rotate keys", lane="backend", risk="high", actor="cli"),
        "issue": lifecycle.submit("Fix issue 19 in the parser", lane="data", actor="cli"),
        "dead": failed("Flaky migration", error_type="agent_exit"),
    }


def test_an_id_with_or_without_hash_finds_the_task(client, viewer, floor):
    client.force_login(viewer)
    ui = floor["ui"]
    assert cards(client, q=f"#{ui.pk}") == {ui.pk}
    # A bare number is the task with that id, or a goal with that number in it.
    assert cards(client, q=str(ui.pk)) == {ui.pk}
    assert floor["issue"].pk in cards(client, q="19")


def test_a_completed_task_from_another_day_is_found_by_its_id(client, viewer):
    from datetime import timedelta

    from django.utils import timezone

    task = lifecycle.submit("Old work", lane="qa", actor="cli", pipeline="none")
    claimed = lifecycle.claim_next("@qa-1")
    lifecycle.complete(task.pk, worker_id="@qa-1", token=claimed.claim_token, result={})
    Task.objects.filter(pk=task.pk).update(updated_at=timezone.now() - timedelta(days=5))
    client.force_login(viewer)
    assert task.pk not in cards(client)  # the completed column is today's
    assert cards(client, q=f"#{task.pk}") == {task.pk}


def test_a_cancelled_task_found_by_id_is_named_with_a_link(client, viewer, floor):
    lifecycle.cancel(floor["api"].pk, actor="cli")
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:board"), {"q": f"#{floor['api'].pk}"}).content.decode()
    assert "is cancelled, so it has no column on the board" in html
    assert f'href="/tasks/{floor["api"].pk}/"' in html


@pytest.mark.parametrize(
    "q,expected",
    [
        ("lane:frontend", {"ui"}),
        ("lane:Frontend", {"ui"}),
        ("risk:high", {"risky"}),
        ("status:dead_letter", {"dead"}),
        ("status:dead-letter", {"dead"}),
        ("status:awaiting_approval", {"risky"}),
        ("error:agent_exit", {"dead"}),
        ("worker:@backend-1", {"dead"}),
        ("worker:backend-1", {"dead"}),
        ("lane:backend pricing", {"api"}),
        ("PRICING", {"api"}),
        ("lane:backend risk:low", {"api", "dead"}),
    ],
)
def test_qualifiers_and_free_text_narrow_the_board(client, viewer, floor, q, expected):
    client.force_login(viewer)
    assert cards(client, q=q) == {floor[name].pk for name in expected}


def test_status_and_risk_work_as_url_parameters_too(client, viewer, floor):
    client.force_login(viewer)
    assert cards(client, status="dead_letter") == {floor["dead"].pk}
    assert cards(client, risk="high") == {floor["risky"].pk}


def test_a_delivery_qualifier_matches_the_delivery_state(client, viewer, floor):
    Task.objects.filter(pk=floor["api"].pk).update(delivery_state="conflict")
    client.force_login(viewer)
    assert cards(client, q="delivery:conflict") == {floor["api"].pk}
    assert cards(client, q="delivery:merge_conflict") == {floor["api"].pk}  # its label


def test_a_qualifier_that_makes_no_sense_is_ignored_and_named(client, viewer, floor):
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:board"), {"q": "lane:kitchen pricing"}).content.decode()
    assert "“kitchen” is not a lane here; use one of backend" in html
    assert "That part of the search is ignored" in html
    assert cards(client, q="lane:kitchen pricing") == {floor["api"].pk}
    html = client.get(reverse("tasks_app:board"), {"q": "status:cancelled"}).content.decode()
    assert "cancelled tasks are not on the board" in html


def test_a_word_with_a_colon_that_is_no_qualifier_is_searched_as_text(client, viewer):
    task = lifecycle.submit("Fetch https://example.com/feed nightly", lane="data", actor="cli")
    client.force_login(viewer)
    assert cards(client, q="https://example.com/feed") == {task.pk}


def test_the_search_parser():
    search = dashboard.Search.parse("lane:qa #7 #9 login  form Status:Blocked")
    assert search.qualifiers == {"lane": "qa", "status": "blocked"}
    assert search.ids == (7, 9)
    assert search.text == "login form"
    assert search.number is None
    assert dashboard.Search.parse("19").number == 19
    assert dashboard.Search.parse("²").number is None  # isdigit, but no number


def test_the_tiles_follow_the_filter_or_say_all_lanes(client, viewer, floor):
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:board")).content.decode()
    assert "Goals in all lanes" in html
    assert re.search(r"Pending</dt><dd>3</dd>", html)
    html = client.get(reverse("tasks_app:board"), {"q": "lane:frontend"}).content.decode()
    assert "Goals in lane frontend" in html
    assert re.search(r"Pending</dt><dd>1</dd>", html)
    assert re.search(r"Dead letter</dt><dd>0</dd>", html)
    html = client.get(reverse("tasks_app:board"), {"lane": "backend"}).content.decode()
    assert re.search(r"Dead letter</dt><dd>1", html)
    assert re.search(r"Awaiting approval</dt><dd>1</dd>", html)


def test_an_htmx_filter_change_brings_the_clear_link_and_messages(client, viewer, floor):
    client.force_login(viewer)
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "live", "HTTP_HX_TRIGGER": "filters"}
    html = client.get(reverse("tasks_app:board"), {"q": "lane:nowhere"}, **headers)
    html = html.content.decode()
    clear = '<a class="button button-quiet" href="/">Clear</a>'
    assert f'<span id="filter-clear" hx-swap-oob="true">{clear}' in html
    assert '<div id="filter-messages" hx-swap-oob="true">' in html and "is not a lane" in html
    # Back to no filter: the Clear link goes away.
    html = client.get(reverse("tasks_app:board"), **headers).content.decode()
    assert '<span id="filter-clear" hx-swap-oob="true"></span>' in html
    # A refresh tick sends neither: its messages would be announced again every 5 seconds.
    html = client.get(
        reverse("tasks_app:board"),
        {"q": "lane:nowhere"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="live",
        HTTP_HX_TRIGGER="live",
    ).content.decode()
    assert "filter-clear" not in html and "filter-messages" not in html


def test_the_next_refresh_keeps_every_filter(client, viewer, floor):
    client.force_login(viewer)
    html = client.get(
        reverse("tasks_app:board"),
        {"q": "#1 lane:qa", "status": "pending", "risk": "low", "reviews": "1"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="live",
    ).content.decode()
    live_url = re.search(r'<div id="live" class="live" hx-get="([^"]+)"', html).group(1)
    assert live_url == "/?status=pending&amp;risk=low&amp;q=%231+lane%3Aqa&amp;reviews=1"


def test_the_metrics_fragment_is_a_page_of_its_own_in_a_browser(client, viewer, floor):
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:metrics")).content.decode()
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert "<title>Metrics · Vibe Factory</title>" in html and "<h1>Metrics</h1>" in html
    fragment = client.get(reverse("tasks_app:metrics"), HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<section id="metrics"')
    lane = client.get(reverse("tasks_app:metrics"), {"lane": "frontend"}, HTTP_HX_REQUEST="true")
    assert re.search(r"Pending</dt><dd>1</dd>", lane.content.decode())


def test_the_filter_form_shows_the_search_help_and_a_status_select(client, viewer):
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:board"), {"status": "blocked"}).content.decode()
    assert 'aria-describedby="f-q-help"' in html and "lane:" in html
    assert '<option value="blocked" selected>Blocked</option>' in html
    assert 'hx-trigger="submit, vibe:filter"' in html  # selects apply through vibe.js
    assert Status.CANCELLED not in re.findall(
        r'<option value="(\w+)"', html.split('id="f-status"')[1].split("</select>")[0]
    )


@pytest.mark.parametrize("q", ["#99999999999999999999999", "99999999999999999999999"])
def test_an_id_past_64_bits_finds_nothing_instead_of_failing(client, viewer, q):
    lifecycle.submit("Add a health endpoint", lane="backend", actor="cli")
    client.force_login(viewer)
    assert cards(client, q=q) == set()
