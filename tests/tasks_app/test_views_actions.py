"""The dashboard's buttons: every action for every role. Allowed → the lifecycle moves the task
and writes a history row naming the person; not allowed → 403 and nothing changed. CSRF stays on,
and a raced click shows the lifecycle's message instead of an error page."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db

BOARD_URL = "http://testserver/"
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": BOARD_URL}


def _dead_letter(goal: str = "Fix the flaky payment webhook") -> Task:
    worker = Worker.objects.get(pk="@backend-1")
    task = lifecycle.submit(
        goal, lane="backend", actor="cli", max_attempts=1, pipeline="none", priority=100
    )
    claimed = lifecycle.claim_next(worker)
    lifecycle.fail(task.pk, worker_id=worker.pk, token=claimed.claim_token, error_type="timeout")
    task.refresh_from_db()
    return task


def _blocked() -> Task:
    task = _dead_letter("Blocked by a critical finding")
    # A blocked task, made the way a person would see it; only the status column differs.
    Task.objects.filter(pk=task.pk).update(status=Status.BLOCKED)
    task.refresh_from_db()
    return task


def _awaiting() -> Task:
    return lifecycle.submit("Drop the legacy users table", lane="data", risk="high", actor="cli")


def _open() -> Task:
    return lifecycle.submit("Write the changelog", lane="qa", actor="cli")


MAKERS = {"retry": _dead_letter, "approve": _awaiting, "cancel": _open}
EXPECTED = {"retry": Status.PENDING, "approve": Status.PENDING, "cancel": Status.CANCELLED}
ROLES_ALLOWED = {
    "retry": {"operator", "approver", "superuser"},
    "approve": {"approver", "superuser"},
    "cancel": {"operator", "approver", "superuser"},
}


@pytest.mark.parametrize("action", ["retry", "approve", "cancel"])
@pytest.mark.parametrize("role", ["viewer", "operator", "approver", "outsider", "superuser"])
@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain-form"])
def test_every_task_button_for_every_role(request, client, action, role, htmx):
    user = request.getfixturevalue(role)
    task = MAKERS[action]()
    before_status = task.status
    history_before = TaskHistory.objects.filter(task=task).count()
    client.force_login(user)
    url = reverse("tasks_app:task_action", args=[task.pk, action])
    headers = HTMX if htmx else {}
    response = client.post(url, {"origin": "card", "next": "/"}, **headers)
    task.refresh_from_db()
    if role in ROLES_ALLOWED[action]:
        assert response.status_code == (200 if htmx else 302)
        assert task.status == EXPECTED[action]
        last = TaskHistory.objects.filter(task=task).latest("id")
        assert last.actor == f"user:{user.username}"
        assert TaskHistory.objects.filter(task=task).count() == history_before + 1
    else:
        assert response.status_code == 403
        assert b"Not allowed" in response.content
        assert b"Nothing was changed" in response.content
        assert task.status == before_status
        assert TaskHistory.objects.filter(task=task).count() == history_before


def test_retry_button_on_a_blocked_task(client, operator):
    task = _blocked()
    client.force_login(operator)
    client.post(reverse("tasks_app:task_action", args=[task.pk, "retry"]), {}, **HTMX)
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.attempt_count == 0


def test_buttons_are_shown_only_to_people_allowed(client, viewer, operator, approver):
    dead = _dead_letter()
    waiting = _awaiting()
    url = reverse("tasks_app:board")
    client.force_login(viewer)
    html = client.get(url).content.decode()
    assert f"Retry task {dead.pk}" not in html and f"Approve task {waiting.pk}" not in html
    assert f"Cancel task {dead.pk}" not in html
    client.force_login(operator)
    html = client.get(url).content.decode()
    assert f"Retry task {dead.pk}" in html and f"Approve task {waiting.pk}" not in html
    assert f"Cancel task {waiting.pk}" in html and "Retry all shown" in html
    client.force_login(approver)
    html = client.get(url).content.decode()
    assert f"Approve task {waiting.pk}" in html


def test_htmx_retry_swaps_the_card_into_pending_with_metrics_out_of_band(client, operator):
    task = _dead_letter()
    client.force_login(operator)
    response = client.post(
        reverse("tasks_app:task_action", args=[task.pk, "retry"]), {"origin": "card"}, **HTMX
    )
    html = response.content.decode()
    assert "<html" not in html
    assert 'hx-swap-oob="afterbegin:#cards-pending"' in html
    assert f'id="card-{task.pk}"' in html
    assert f'<div id="dlq-row-{task.pk}" hx-swap-oob="delete">' in html
    assert 'id="metrics" class="metrics" aria-label="Factory metrics" hx-swap-oob="true"' in html
    assert 'id="count-dead_letter" hx-swap-oob="true">0<' in html
    assert f"Task #{task.pk} retried." in html


def test_htmx_retry_from_the_detail_panel_rerenders_the_detail(client, operator):
    task = _dead_letter()
    client.force_login(operator)
    response = client.post(
        reverse("tasks_app:task_action", args=[task.pk, "retry"]), {"origin": "detail"}, **HTMX
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="task-detail"')
    assert f'<div id="card-{task.pk}" hx-swap-oob="delete">' in html
    assert "retried; attempts reset" in html  # the new history row is in the timeline


def test_raced_click_shows_the_lifecycle_message_not_an_error_page(client, operator):
    task = _dead_letter()
    lifecycle.retry(task.pk, actor="slack:U1")  # someone else was faster
    client.force_login(operator)
    response = client.post(
        reverse("tasks_app:task_action", args=[task.pk, "retry"]), {"origin": "card"}, **HTMX
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "only dead letter or blocked tasks can be retried" in html
    assert "message-error" in html
    assert TaskHistory.objects.filter(task=task, actor="user:otto").count() == 0


def test_raced_click_without_javascript_redirects_with_the_message(client, operator):
    task = _dead_letter()
    lifecycle.retry(task.pk, actor="cli")
    client.force_login(operator)
    response = client.post(
        reverse("tasks_app:task_action", args=[task.pk, "retry"]), {"next": "/"}, follow=True
    )
    assert response.status_code == 200
    assert b"only dead letter or blocked tasks can be retried" in response.content


def test_next_parameter_cannot_redirect_off_site(client, operator):
    task = _open()
    client.force_login(operator)
    response = client.post(
        reverse("tasks_app:task_action", args=[task.pk, "cancel"]),
        {"next": "https://evil.example.com/"},
    )
    assert response.status_code == 302
    assert response["Location"] == task.get_absolute_url()


def test_unknown_action_and_unknown_task_are_404(client, superuser):
    task = _open()
    client.force_login(superuser)
    assert client.post(f"/tasks/{task.pk}/explode/").status_code == 404
    assert client.post("/tasks/999999/retry/").status_code == 404
    assert client.post("/workers/@nobody/pause/").status_code == 404
    assert client.post("/workers/@backend-1/explode/").status_code == 404
    task.refresh_from_db()
    assert task.status == Status.PENDING


def test_pause_of_a_worker_id_with_a_nul_byte_is_a_400(client, operator):
    client.force_login(operator)
    # Refused before the view by vibe_project.middleware (any NUL in a request).
    assert client.post("/workers/a%00b/pause/").status_code == 400


def test_get_on_an_action_is_refused(client, superuser):
    task = _open()
    client.force_login(superuser)
    assert client.get(reverse("tasks_app:task_action", args=[task.pk, "cancel"])).status_code == 405
    task.refresh_from_db()
    assert task.status == Status.PENDING


def test_csrf_is_enforced_on_buttons(operator):
    task = _dead_letter()
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(reverse("tasks_app:task_action", args=[task.pk, "retry"]), {})
    assert response.status_code == 403
    assert b"This form has expired" in response.content
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    # with the token from the page (as htmx sends it from hx-headers) it works
    page = client.get(reverse("tasks_app:board")).content.decode()
    token = page.split('"X-CSRFToken": "')[1].split('"')[0]
    response = client.post(
        reverse("tasks_app:task_action", args=[task.pk, "retry"]),
        {"origin": "card"},
        HTTP_X_CSRFTOKEN=token,
        **HTMX,
    )
    assert response.status_code == 200
    task.refresh_from_db()
    assert task.status == Status.PENDING


def test_csrf_is_enforced_on_worker_buttons(operator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(reverse("workers_app:worker_action", args=["@qa-1", "pause"]))
    assert response.status_code == 403
    assert Worker.objects.get(pk="@qa-1").status == WorkerStatus.ONLINE


# --- Workers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "operator", "approver", "outsider", "superuser"])
def test_pause_and_resume_for_every_role(request, client, role):
    from django.utils import timezone

    user = request.getfixturevalue(role)
    client.force_login(user)
    allowed = role in {"operator", "approver", "superuser"}
    # A running worker: Resume is offered only to a worker with a live process.
    Worker.objects.filter(pk="@qa-1").update(last_heartbeat=timezone.now())
    pause = reverse("workers_app:worker_action", args=["@qa-1", "pause"])
    resume = reverse("workers_app:worker_action", args=["@qa-1", "resume"])
    response = client.post(pause, **HTMX)
    if not allowed:
        assert response.status_code == 403
        assert f"{user.get_username()} may not pause workers here" in response.content.decode()
        assert Worker.objects.get(pk="@qa-1").status == WorkerStatus.ONLINE
        return
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<tr class="worker-row">')
    assert "Resume worker @qa-1" in html and "Worker @qa-1 paused." in html
    assert Worker.objects.get(pk="@qa-1").status == WorkerStatus.PAUSED
    response = client.post(resume, follow=True)
    assert response.status_code == 200
    assert Worker.objects.get(pk="@qa-1").status == WorkerStatus.ONLINE


def test_pausing_a_paused_worker_shows_the_lifecycle_message(client, operator):
    lifecycle.pause_worker("@qa-1", actor="cli")
    client.force_login(operator)
    response = client.post(reverse("workers_app:worker_action", args=["@qa-1", "pause"]), **HTMX)
    assert response.status_code == 200
    assert b"Worker @qa-1 is already paused" in response.content


def test_pool_page_shows_load_heartbeat_and_current_tasks(client, viewer):
    from datetime import timedelta

    from django.utils import timezone

    Worker.objects.filter(pk="@qa-1").update(last_heartbeat=timezone.now() - timedelta(hours=1))
    Worker.objects.filter(pk="@backend-1").update(last_heartbeat=timezone.now())
    task = lifecycle.submit("Running now", lane="backend", actor="cli")
    lifecycle.claim_next(Worker.objects.get(pk="@backend-1"))
    client.force_login(viewer)
    html = client.get(reverse("workers_app:pool")).content.decode()
    assert "@security-1" in html and "@ux-designer" in html
    assert "1h ago · stale" in html
    assert f'href="/tasks/{task.pk}/"' in html
    assert "1/2" in html  # load of @backend-1
    assert "Pause worker" not in html  # a viewer has no buttons
    sorted_html = client.get(reverse("workers_app:pool"), {"sort": "-priority_score"}).content
    assert sorted_html.decode().index("@security-1") < sorted_html.decode().index("@backend-1")
    partial = client.get(reverse("workers_app:pool"), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="pool")
    assert partial.content.decode().lstrip().startswith('<div id="pool"')


# --- Retry all shown --------------------------------------------------------------------------


def test_retry_all_confirms_the_count_then_moves_exactly_those(client, operator):
    tasks = [_dead_letter(f"Dead {i}") for i in range(3)]
    other = lifecycle.submit("QA dead", lane="qa", actor="cli", max_attempts=1, pipeline="none")
    qa = Worker.objects.get(pk="@qa-1")
    claimed = lifecycle.claim_next(qa)
    lifecycle.fail(other.pk, worker_id=qa.pk, token=claimed.claim_token, error_type="timeout")
    client.force_login(operator)
    page = client.get(reverse("tasks_app:retry_all"), {"lane": "backend"}).content.decode()
    assert "This will move <strong>3 tasks</strong>" in page
    ids = [str(t.pk) for t in tasks]
    late = _dead_letter("Arrived after the confirmation")
    response = client.post(reverse("tasks_app:retry_all"), {"ids": ids, "next": "/?lane=backend"})
    assert response.status_code == 302 and response["Location"] == "/?lane=backend"
    assert all(Task.objects.get(pk=t.pk).status == Status.PENDING for t in tasks)
    assert Task.objects.get(pk=late.pk).status == Status.DEAD_LETTER
    assert Task.objects.get(pk=other.pk).status == Status.DEAD_LETTER
    html = client.get("/").content.decode()
    assert "Retried 3 tasks." in html


def test_retry_all_reports_tasks_that_moved_meanwhile(client, operator):
    tasks = [_dead_letter(f"Dead {i}") for i in range(2)]
    lifecycle.retry(tasks[0].pk, actor="cli")
    client.force_login(operator)
    response = client.post(
        reverse("tasks_app:retry_all"), {"ids": [t.pk for t in tasks]}, follow=True
    )
    html = response.content.decode()
    assert "Retried 1 task." in html and "1 could not be retried" in html


def test_retry_all_rejects_bad_input_and_changes_nothing(client, operator, viewer):
    task = _dead_letter()
    client.force_login(operator)
    html = client.post(reverse("tasks_app:retry_all"), {"ids": ["1", "x"]}, follow=True).content
    assert b"was not understood; nothing changed" in html
    html = client.post(reverse("tasks_app:retry_all"), {}, follow=True).content
    assert b"nothing changed" in html
    assert Task.objects.get(pk=task.pk).status == Status.DEAD_LETTER
    client.force_login(viewer)
    assert client.get(reverse("tasks_app:retry_all")).status_code == 403
    assert client.post(reverse("tasks_app:retry_all"), {"ids": [task.pk]}).status_code == 403
    assert Task.objects.get(pk=task.pk).status == Status.DEAD_LETTER


def test_cached_cards_carry_each_visitors_own_csrf_token(operator, approver):
    """Cards come from a per-process cache; the CSRF field in them must still be the visitor's
    own, so the form works without JavaScript (a shared token would be refused with a 403)."""
    tasks = [_dead_letter("First"), _dead_letter("Second")]
    for user, task in zip((operator, approver), tasks, strict=True):
        url = reverse("tasks_app:task_action", args=[task.pk, "retry"])
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        html = client.get(reverse("tasks_app:board")).content.decode()
        assert "<!--vibe-csrf-->" not in html
        form = html.split(f'action="{url}"')[1].split("</form>")[0]
        token = form.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
        response = client.post(url, {"csrfmiddlewaretoken": token, "origin": "card", "next": "/"})
        assert response.status_code == 302, user.username
        task.refresh_from_db()
        assert task.status == Status.PENDING
