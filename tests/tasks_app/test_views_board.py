"""The board, task detail, dead-letter panel, history and throughput pages, through the test
client against the real database: what each role sees, what each button does, and how many
queries each page costs whatever the number of tasks."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from workers_app.models import Worker

pytestmark = pytest.mark.django_db

XSS_GOAL = '<script>alert("pwned")</script><img src=x onerror=alert(1)> fix login'


def make_worker(worker_id: str = "@backend-1", lane: str = "backend", capacity: int = 3) -> Worker:
    """A worker row (the default pool's migration may already have made it)."""
    worker, _ = Worker.objects.update_or_create(
        worker_id=worker_id, defaults={"lane": lane, "capacity_limit": capacity}
    )
    return worker


def dead_letter_task(goal: str = "Add rate limiting to the login view", lane: str = "backend"):
    """A task that really failed: submitted, claimed by a worker, failed past its attempts."""
    worker = Worker.objects.filter(lane=lane).first() or make_worker(f"@{lane}-1", lane)
    task = lifecycle.submit(
        goal, lane=lane, actor="cli", max_attempts=1, pipeline="none", priority=100
    )
    claimed = lifecycle.claim_next(worker)
    assert claimed.pk == task.pk
    lifecycle.fail(
        task.pk,
        worker_id=worker.pk,
        token=claimed.claim_token,
        error_type="agent_exit",
        error="Traceback: boom",
    )
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    return task


def login(client, user) -> None:
    client.force_login(user)


# --- Pages ------------------------------------------------------------------------------------


def test_board_requires_login(client):
    response = client.get(reverse("tasks_app:board"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_page_is_in_the_products_style(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Sign in to Vibe Factory" in response.content
    assert b"css/vibe.css" in response.content


def test_board_shows_metrics_columns_and_cards(client, viewer):
    make_worker()
    lifecycle.submit("Build the signup form", lane="frontend", actor="cli")
    lifecycle.submit("Rotate the database password", lane="backend", risk="high", actor="cli")
    dead = dead_letter_task()
    login(client, viewer)
    response = client.get(reverse("tasks_app:board"))
    assert response.status_code == 200
    html = response.content.decode()
    for label in ("Active workers", "Pending", "In progress", "Awaiting approval", "Dead letter"):
        assert label in html
    assert 'id="cards-pending"' in html and 'id="cards-dead_letter"' in html
    assert "Build the signup form" in html
    assert f'id="card-{dead.pk}"' in html
    assert "agent_exit" in html
    assert 'id="count-dead_letter">1<' in html
    assert "metric-alert" in html  # dead letter highlighted when not zero
    assert 'id="dlq-row-' in html
    # a viewer sees no buttons
    assert "Retry task" not in html and "Approve task" not in html and "Retry all" not in html


def test_board_htmx_poll_returns_only_the_live_region(client, viewer):
    lifecycle.submit("Poll me", lane="qa", actor="cli")
    login(client, viewer)
    response = client.get(
        reverse("tasks_app:board") + "?lane=qa", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="live"
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="live"')
    assert "<html" not in html
    assert 'hx-get="/?lane=qa"' in html  # the next poll keeps the filter
    assert "HX-Request" in response["Vary"]


def test_board_filters_by_lane_worker_error_and_text(client, viewer):
    make_worker("@frontend-1", "frontend")
    lifecycle.submit("Frontend: dark mode toggle", lane="frontend", actor="cli")
    lifecycle.submit("Backend: cache the pricing API", lane="backend", actor="cli")
    dead_letter_task("Backend: flaky migration", lane="backend")
    login(client, viewer)
    url = reverse("tasks_app:board")
    html = client.get(url, {"lane": "frontend"}).content.decode()
    assert "dark mode toggle" in html and "cache the pricing API" not in html
    html = client.get(url, {"q": "PRICING"}).content.decode()
    assert "cache the pricing API" in html and "dark mode toggle" not in html
    html = client.get(url, {"error": "agent_exit"}).content.decode()
    assert "flaky migration" in html and "dark mode toggle" not in html
    html = client.get(url, {"worker": "@backend-1"}).content.decode()
    assert "flaky migration" in html and "cache the pricing API" not in html


def test_bad_filter_is_ignored_with_a_message(client, viewer):
    lifecycle.submit("Still visible", lane="qa", actor="cli")
    login(client, viewer)
    response = client.get(reverse("tasks_app:board"), {"lane": "kitchen", "q": "x" * 500})
    assert response.status_code == 200
    html = response.content.decode()
    assert "That filter is ignored" in html
    assert "Still visible" in html


def test_column_shows_at_most_n_cards_and_the_full_count(client, viewer, settings):
    settings.VIBE_BOARD_CARDS_PER_COLUMN = 3
    for i in range(7):
        lifecycle.submit(f"Bulk task {i}", lane="qa", actor="cli", priority=i)
    login(client, viewer)
    html = client.get(reverse("tasks_app:board")).content.decode()
    pending = html.split('id="cards-pending"')[1].split("</section>")[0]
    assert pending.count('class="card ') == 3
    assert 'id="count-pending">7<' in html
    assert "4 more not shown" in html
    # most urgent first
    assert pending.index("Bulk task 6") < pending.index("Bulk task 5")


def test_goal_with_html_is_escaped_everywhere(client, approver):
    dead = dead_letter_task(XSS_GOAL)
    login(client, approver)
    pages = [
        client.get(reverse("tasks_app:board")),
        client.get(reverse("tasks_app:board"), {"task": dead.pk}),
        client.get(dead.get_absolute_url()),
        client.get(dead.get_absolute_url(), HTTP_HX_REQUEST="true"),
        client.get(reverse("tasks_app:history")),
        client.get(reverse("tasks_app:retry_all")),
        client.post(
            reverse("tasks_app:task_action", args=[dead.pk, "retry"]),
            {"origin": "card"},
            HTTP_HX_REQUEST="true",
            HTTP_HX_CURRENT_URL="http://testserver/",
        ),
    ]
    for response in pages:
        html = response.content.decode()
        assert "<script>alert" not in html
        assert "<img src=x" not in html
    assert "&lt;script&gt;" in pages[2].content.decode()


def test_unknown_task_is_a_404_page_not_a_500(client, viewer):
    login(client, viewer)
    for url in ("/tasks/999999/", "/tasks/999999/retry/", "/tasks/abc/", "/nope/"):
        response = client.get(url)
        assert response.status_code in (404, 405), url
    response = client.get("/tasks/999999/")
    assert b"Not found" in response.content and b"css/vibe.css" in response.content


def test_board_with_unknown_open_task_says_so(client, viewer):
    login(client, viewer)
    response = client.get(reverse("tasks_app:board"), {"task": "424242"})
    assert response.status_code == 200
    assert b"Task 424242 does not exist" in response.content
    response = client.get(reverse("tasks_app:board"), {"task": "'; drop"})
    assert response.status_code == 200


def test_task_detail_shows_history_runs_findings_and_relations(client, viewer):
    from tasks_app.models import Run

    worker = make_worker()
    task = lifecycle.submit("Harden the upload endpoint", lane="backend", actor="slack:U42")
    claimed = lifecycle.claim_next(worker)
    Run.objects.create(
        task=task,
        worker=worker,
        attempt=1,
        agent="simulated",
        exit_code=0,
        duration_seconds=12.5,
        stdout_tail="wrote 3 files",
        stderr_tail="warning: slow disk",
        outcome="completed",
    )
    lifecycle.complete(task.pk, worker_id=worker.pk, token=claimed.claim_token, result={})
    review = Task.objects.get(parent=task)
    review.result = {
        "findings": [{"severity": "HIGH", "title": "Path traversal in upload", "file": "a.py"}]
    }
    review.save(update_fields=["result"])
    login(client, viewer)
    html = client.get(task.get_absolute_url()).content.decode()
    assert "Harden the upload endpoint" in html
    assert "slack:U42" in html and "via Slack" in html
    assert "wrote 3 files" in html and "warning: slow disk" in html and "12.5 s" in html
    assert f"#{review.pk}" in html and "Path traversal in upload" in html and "HIGH" in html
    assert "Review needed" in html
    review_html = client.get(review.get_absolute_url()).content.decode()
    assert f'href="/tasks/{task.pk}/"' in review_html


def test_history_page_filters_and_paginates(client, viewer):
    for i in range(60):
        lifecycle.submit(f"History task {i}", lane="data", actor="user:vera")
    lifecycle.submit("Other lane", lane="qa", actor="discord:77")
    login(client, viewer)
    url = reverse("tasks_app:history")
    html = client.get(url).content.decode()
    assert "Older" in html and "Page 1" in html
    html = client.get(url, {"lane": "qa"}).content.decode()
    assert "Other lane" in html and "History task" not in html
    html = client.get(url, {"actor": "discord"}).content.decode()
    assert "Other lane" in html and "History task" not in html
    response = client.get(url, {"date": "yesterday-ish", "status": "sleeping", "lane": "zzz"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "is not a date" in html and "Unknown status" in html and "Unknown lane" in html
    assert client.get(url, {"page": "999"}).status_code in (200, 404)
    assert client.get(url, {"sort": "nonsense"}).status_code == 200


def test_throughput_chart_counts_completed_and_failed_per_lane(client, viewer):
    worker = make_worker("@qa-1", "qa")
    for _ in range(2):
        t = lifecycle.submit("QA run", lane="qa", actor="cli", pipeline="none")
        c = lifecycle.claim_next(worker)
        lifecycle.complete(t.pk, worker_id=worker.pk, token=c.claim_token, result={})
    t = lifecycle.submit("QA flake", lane="qa", actor="cli", pipeline="none", max_attempts=2)
    c = lifecycle.claim_next(worker)
    lifecycle.fail(t.pk, worker_id=worker.pk, token=c.claim_token, error_type="timeout")
    login(client, viewer)
    html = client.get(reverse("tasks_app:throughput")).content.decode()
    assert "<svg" in html
    assert "2 completed, 1 failed" in html
    assert 'class="bar-done"' in html and 'class="bar-failed"' in html


def test_throughput_finds_failures_by_their_event_not_the_notes_wording(client, viewer):
    """The history row says what the move was: a reworded note still counts as a failure,
    and a draining worker's release (in progress → pending too) does not."""
    worker = make_worker("@qa-1", "qa")
    flaky = lifecycle.submit("QA flake", lane="qa", actor="cli", pipeline="none", max_attempts=3)
    claimed = lifecycle.claim_next(worker)
    lifecycle.fail(flaky.pk, worker_id=worker.pk, token=claimed.claim_token, error_type="timeout")
    failed = TaskHistory.objects.get(task=flaky, event="failed")
    assert (failed.to_status, failed.error_type) == (Status.PENDING, "timeout")
    failed.note = "the agent timed out; it runs again soon"  # no longer "attempt 1/3 failed"
    failed.save()
    lifecycle.submit("QA drained", lane="qa", actor="cli", pipeline="none")
    drained = lifecycle.claim_next(worker)
    lifecycle.release(drained.pk, worker_id=worker.pk, token=drained.claim_token, note="attempt")
    released = TaskHistory.objects.get(task=drained, from_status=Status.IN_PROGRESS)
    assert released.event == "released"
    login(client, viewer)
    html = client.get(reverse("tasks_app:throughput")).content.decode()
    assert "0 completed, 1 failed" in html


def test_the_task_page_shows_a_review_errors_hint_too(client, viewer):
    """Review hints were in chat only; the one catalogue serves every page that shows hints."""
    task = lifecycle.submit("Blocked by its review", lane="qa", actor="cli", pipeline="none")
    Task.objects.filter(pk=task.pk).update(status=Status.BLOCKED, last_error_type="review_blocked")
    login(client, viewer)
    html = client.get(reverse("tasks_app:task_detail", args=[task.pk])).content.decode()
    assert "A review found a blocking finding" in html


def test_throughput_chart_empty_state(client, viewer):
    login(client, viewer)
    html = client.get(reverse("tasks_app:throughput")).content.decode()
    assert "Nothing completed or failed" in html


# --- Query budget -----------------------------------------------------------------------------


def _seed(n: int) -> None:
    make_worker("@backend-9", "backend")
    for i in range(n):
        lifecycle.submit(f"Seeded {i}", lane=["backend", "qa", "data"][i % 3], actor="cli")
    for _ in range(min(n, 3)):
        dead_letter_task(f"Dead {_}")


def _count_queries(client, url: str, **headers) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, **headers)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "url_name,headers",
    [
        ("tasks_app:board", {}),
        ("tasks_app:board", {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "live"}),
        ("workers_app:pool", {}),
        ("workers_app:pool", {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "pool"}),
        ("tasks_app:history", {}),
        ("tasks_app:metrics", {}),
    ],
)
def test_page_query_count_does_not_grow_with_the_number_of_tasks(client, viewer, url_name, headers):
    login(client, viewer)
    _seed(3)
    small = _count_queries(client, reverse(url_name), **headers)
    _seed(60)
    large = _count_queries(client, reverse(url_name), **headers)
    assert small == large
    assert small <= 20


def test_task_detail_query_count_is_fixed(client, viewer):
    login(client, viewer)
    worker = make_worker()
    task = lifecycle.submit("Measured", lane="backend", actor="cli", max_attempts=5)
    small = _count_queries(client, task.get_absolute_url())
    for _ in range(4):
        claimed = lifecycle.claim_next(worker)
        lifecycle.fail(
            task.pk, worker_id=worker.pk, token=claimed.claim_token, error_type="timeout"
        )
        Task.objects.filter(pk=task.pk).update(not_before=None)
    assert TaskHistory.objects.filter(task=task).count() >= 9
    assert _count_queries(client, task.get_absolute_url()) == small


def test_html_ids_are_unique_on_the_board(client, approver):
    make_worker()
    for _ in range(3):
        dead_letter_task()
    lifecycle.submit("Needs approval", lane="backend", risk="high", actor="cli")
    login(client, approver)
    html = client.get(reverse("tasks_app:board")).content.decode()
    ids = re.findall(r'\sid="([^"]+)"', html)
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates


@pytest.mark.parametrize(
    "url", ["/", "/tasks/1/", "/workers/", "/history/", "/metrics/", "/throughput/"]
)
def test_an_account_in_no_group_sees_nothing(client, outsider, url):
    lifecycle.submit("Secret roadmap item", lane="qa", actor="cli")
    client.force_login(outsider)
    response = client.get(url)
    assert response.status_code == 403
    assert b"Secret roadmap item" not in response.content
    assert b"Viewer group" in response.content


def test_metrics_bar_counts_live_work_and_todays_completions(client, viewer):
    worker = make_worker("@qa-1", "qa")
    done = lifecycle.submit("Done today", lane="qa", actor="cli", pipeline="none")
    claimed = lifecycle.claim_next(worker)
    lifecycle.complete(done.pk, worker_id=worker.pk, token=claimed.claim_token, result={})
    old = lifecycle.submit("Done long ago", lane="qa", actor="cli", pipeline="none")
    claimed = lifecycle.claim_next(worker)
    lifecycle.complete(old.pk, worker_id=worker.pk, token=claimed.claim_token, result={})
    from datetime import timedelta

    from django.utils import timezone

    Task.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=3))
    lifecycle.submit("Waiting", lane="qa", actor="cli")
    lifecycle.submit("Risky", lane="qa", risk="high", actor="cli")
    login(client, viewer)
    html = client.get(reverse("tasks_app:metrics")).content.decode()
    assert re.search(r"Completed today</dt><dd>1</dd>", html)
    assert re.search(r"Pending</dt><dd>1</dd>", html)
    assert re.search(r"Awaiting approval</dt><dd>1</dd>", html)
    assert re.search(r"Dead letter</dt><dd>0</dd>", html)


# --- Odd input in the address bar: never a 500 ------------------------------------------------


def test_board_with_a_non_ascii_digit_task_says_it_does_not_exist(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("tasks_app:board"), {"task": "²"})
    assert response.status_code == 200
    assert "Task ² does not exist" in response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        {"page": "99999999999999999999"},
        {"page": "4611686018427387904"},
        {"per_page": "-5"},
        {"per_page": "99999999999999999999"},
    ],
)
def test_history_page_survives_absurd_page_numbers(client, viewer, query):
    lifecycle.submit("One task", lane="qa", actor="cli")
    client.force_login(viewer)
    response = client.get(reverse("tasks_app:history"), query)
    assert response.status_code == 200
    assert "One task" in response.content.decode()


def test_history_page_size_is_not_chosen_by_the_query(client, viewer):
    for i in range(3):
        lifecycle.submit(f"Task {i}", lane="qa", actor="cli")
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:history"), {"per_page": "1"}).content.decode()
    assert all(f"Task {i}" in html for i in range(3))


def test_history_actor_filter_with_a_nul_byte_is_not_a_500(client, viewer):
    lifecycle.submit("Filtered", lane="qa", actor="user:vera")
    client.force_login(viewer)
    response = client.get(reverse("tasks_app:history"), {"actor": "ve\x00ra"})
    assert response.status_code == 400  # vibe_project.middleware refuses any NUL in a request


def test_history_page_lane_chip_carries_the_lanes_css_class(client, viewer):
    lifecycle.submit("Coloured", lane="qa", actor="cli")
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:history")).content.decode()
    assert '<span class="lane lane-qa">QA</span>' in html
