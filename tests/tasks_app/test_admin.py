"""The task admin: actions go through the lifecycle, declare permissions, and never 500."""

from __future__ import annotations

import pytest
from django.contrib.admin import helpers
from django.contrib.messages import get_messages
from django.urls import reverse

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task, TaskHistory

CHANGELIST = reverse("admin:tasks_app_task_changelist")


def staff(user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def logged_in(client, user):
    client.force_login(staff(user))
    return client


def dead_letter_task(goal: str = "fix the login bug") -> Task:
    task = lifecycle.submit(goal, lane="backend", actor="cli")
    claimed = lifecycle.claim_next("@backend-1")
    assert claimed.pk == task.pk
    lifecycle.fail(
        task.pk, worker_id="@backend-1", token=claimed.claim_token, error_type="config_error"
    )
    task.refresh_from_db()
    assert task.status == Status.DEAD_LETTER
    return task


def run_action(client, action: str, *tasks: Task):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [t.pk for t in tasks], "index": 0}
    response = client.post(CHANGELIST, data)
    return response, [str(m) for m in get_messages(response.wsgi_request)]


def action_names(client) -> set[str]:
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    form = response.context["action_form"]  # None when the user may run no action at all
    return {name for name, _ in form.fields["action"].choices} if form else set()


def test_viewer_sees_the_list_but_none_of_the_actions(client, viewer):
    dead_letter_task()
    logged_in(client, viewer)
    names = action_names(client)
    assert not names & {"retry_tasks", "approve_tasks", "cancel_tasks"}


def test_each_role_sees_only_the_actions_it_may_run(client, operator, approver, superuser):
    assert {"retry_tasks", "cancel_tasks"} <= action_names(logged_in(client, operator))
    assert "approve_tasks" not in action_names(client)
    assert {"retry_tasks", "cancel_tasks", "approve_tasks"} <= action_names(
        logged_in(client, approver)
    )
    assert {"retry_tasks", "cancel_tasks", "approve_tasks"} <= action_names(
        logged_in(client, superuser)
    )


def test_retry_action_moves_dead_letter_task_to_pending_with_history(client, operator):
    task = dead_letter_task()
    before = task.history.count()
    response, msgs = run_action(logged_in(client, operator), "retry_tasks", task)
    assert response.status_code == 302
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.attempt_count == 0
    assert task.history.count() == before + 1
    last = task.history.last()
    assert (last.from_status, last.to_status, last.actor) == ("dead_letter", "pending", "user:otto")
    assert any(f"#{task.pk}" in m and "etried" in m for m in msgs)


def test_approve_action_by_approver(client, approver):
    task = lifecycle.submit("rotate the keys", lane="backend", risk="high", actor="cli")
    assert task.status == Status.AWAITING_APPROVAL
    run_action(logged_in(client, approver), "approve_tasks", task)
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.approved_by == "user:alice"
    assert task.history.last().actor == "user:alice"


def test_cancel_action_by_operator(client, operator):
    task = lifecycle.submit("tidy the readme", lane="frontend", actor="cli")
    run_action(logged_in(client, operator), "cancel_tasks", task)
    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert task.history.last().actor == "user:otto"


@pytest.mark.parametrize("action", ["retry_tasks", "approve_tasks", "cancel_tasks"])
def test_forged_action_post_by_viewer_changes_nothing(client, viewer, action):
    dead = dead_letter_task()
    waiting = lifecycle.submit("drop the table", lane="backend", risk="high", actor="cli")
    history_before = TaskHistory.objects.count()
    response, msgs = run_action(logged_in(client, viewer), action, dead, waiting)
    assert response.status_code in (200, 302)
    dead.refresh_from_db()
    waiting.refresh_from_db()
    assert dead.status == Status.DEAD_LETTER
    assert waiting.status == Status.AWAITING_APPROVAL
    assert TaskHistory.objects.count() == history_before


def test_operator_cannot_forge_approve(client, operator):
    waiting = lifecycle.submit("drop the table", lane="backend", risk="high", actor="cli")
    run_action(logged_in(client, operator), "approve_tasks", waiting)
    waiting.refresh_from_db()
    assert waiting.status == Status.AWAITING_APPROVAL
    assert waiting.history.count() == 1


def test_illegal_retry_shows_the_lifecycle_message_and_changes_nothing(client, operator):
    task = lifecycle.submit("write docs", lane="qa", actor="cli")
    response, msgs = run_action(logged_in(client, operator), "retry_tasks", task)
    assert response.status_code == 302
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.history.count() == 1
    assert f"Task {task.pk} is pending; only dead letter or blocked tasks can be retried." in msgs


def test_mixed_selection_moves_the_legal_ones_and_reports_the_rest(client, superuser):
    dead = dead_letter_task()
    done = lifecycle.submit("already gone", lane="qa", actor="cli")
    lifecycle.cancel(done.pk, actor="cli")
    response, msgs = run_action(logged_in(client, superuser), "retry_tasks", dead, done)
    dead.refresh_from_db()
    done.refresh_from_db()
    assert dead.status == Status.PENDING
    assert done.status == Status.CANCELLED
    assert any(f"#{dead.pk}" in m for m in msgs)
    assert any(f"Task {done.pk} is cancelled" in m for m in msgs)


def test_action_page_follows_through_to_the_list_with_messages(client, operator):
    task = lifecycle.submit("write docs", lane="qa", actor="cli")
    data = {"action": "cancel_tasks", helpers.ACTION_CHECKBOX_NAME: [task.pk], "index": 0}
    response = logged_in(client, operator).post(CHANGELIST, data, follow=True)
    assert response.status_code == 200
    assert "Cancelled: #" in response.content.decode()


def test_add_goes_through_submit(client, superuser):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:tasks_app_task_add"),
        {
            "goal": "  add rate limiting to the API  ",
            "lane": "backend",
            "priority": 80,
            "risk": "high",
            "pipeline": "",
            "status": "completed",  # not a field of the form: ignored
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    task = Task.objects.get()
    assert task.goal == "add rate limiting to the API"
    assert task.status == Status.AWAITING_APPROVAL
    assert task.pipeline == "backend"
    history = list(task.history.all())
    assert [(h.from_status, h.to_status, h.actor) for h in history] == [
        ("", "awaiting_approval", "user:root")
    ]


def test_add_with_prerequisites(client, superuser):
    first = lifecycle.submit("schema", lane="backend", actor="cli")
    client.force_login(superuser)
    response = client.post(
        reverse("admin:tasks_app_task_add"),
        {"goal": "api", "lane": "backend", "priority": 50, "risk": "low", "depends_on": [first.pk]},
    )
    assert response.status_code == 302
    task = Task.objects.exclude(pk=first.pk).get()
    assert list(task.depends_on.values_list("pk", flat=True)) == [first.pk]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"goal": "   ", "priority": 50}, "This field is required"),
        ({"goal": "x", "priority": 150}, "Priority 150 is out of range; use 0 to 100"),
        ({"goal": "x", "priority": "lots"}, "Enter a whole number"),
        ({"goal": "x", "priority": 5, "lane": "marketing"}, "Select a valid choice"),
    ],
)
def test_add_with_bad_input_shows_the_error_and_creates_nothing(client, superuser, data, message):
    client.force_login(superuser)
    payload = {"lane": "backend", "risk": "low", **data}
    response = client.post(reverse("admin:tasks_app_task_add"), payload)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Task.objects.exists()


@pytest.mark.parametrize("forged", ["99999999999999999999999", "abc", "1e5", "-4", "0"])
def test_add_with_a_forged_prerequisite_id_shows_the_error_and_creates_nothing(
    client, superuser, forged
):
    real = lifecycle.submit("schema", lane="backend", actor="cli")
    client.force_login(superuser)
    payload = {"goal": "api", "lane": "backend", "priority": 50, "risk": "low"}
    response = client.post(
        reverse("admin:tasks_app_task_add"), {**payload, "depends_on": [real.pk, forged]}
    )
    assert response.status_code == 200
    assert f"“{forged}” is not a valid value" in response.content.decode()
    assert list(Task.objects.values_list("pk", flat=True)) == [real.pk]


@pytest.mark.parametrize(
    "url",
    [
        CHANGELIST + "?created_at__year=99999999999999999999",
        CHANGELIST + "?created_at__year=2026&created_at__month=99999999999999999999",
        CHANGELIST + "?created_at__year=9999",
        CHANGELIST + "?created_at__year=9999&created_at__month=12",
        reverse("admin:tasks_app_taskhistory_changelist") + "?created_at__year=1" + "0" * 20,
        reverse("admin:tasks_app_run_changelist") + "?started_at__year=99999999999999999999",
        reverse("admin:chatops_app_notification_changelist")
        + "?created_at__year=99999999999999999999",
    ],
)
def test_a_date_drill_down_past_any_date_is_an_invalid_filter_not_an_error(client, superuser, url):
    client.force_login(superuser)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")  # Django's "invalid filter" page


def test_add_form_has_no_status_field(client, superuser):
    client.force_login(superuser)
    response = client.get(reverse("admin:tasks_app_task_add"))
    assert response.status_code == 200
    assert 'name="status"' not in response.content.decode()


def test_change_form_edits_goal_and_priority_but_never_status(client, superuser):
    task = dead_letter_task()
    history_before = task.history.count()
    client.force_login(superuser)
    url = reverse("admin:tasks_app_task_change", args=[task.pk])
    page = client.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert 'name="status"' not in body
    assert 'name="goal"' in body
    assert "config_error is not worth retrying" in body  # the history inline
    response = client.post(
        url,
        {
            "goal": "fix the login bug properly",
            "priority": 90,
            "status": "completed",
            "attempt_count": 0,
            "claim_token": 99,
            "history-TOTAL_FORMS": 0,
            "history-INITIAL_FORMS": 0,
            "runs-TOTAL_FORMS": 0,
            "runs-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    task.refresh_from_db()
    assert task.goal == "fix the login bug properly"
    assert task.priority == 90
    assert task.status == Status.DEAD_LETTER
    assert task.attempt_count == 1
    assert task.claim_token == 1
    assert task.history.count() == history_before + 1
    row = task.history.order_by("id").last()
    assert row.actor == "user:root" and row.to_status == Status.DEAD_LETTER
    assert row.note == (
        "edited: goal 'fix the login bug' → 'fix the login bug properly'; priority 50 → 90"
    )


def test_change_form_refuses_a_bad_priority(client, superuser):
    task = lifecycle.submit("x", lane="qa", actor="cli")
    client.force_login(superuser)
    url = reverse("admin:tasks_app_task_change", args=[task.pk])
    response = client.post(url, {"goal": "x", "priority": -1})
    assert response.status_code == 200
    assert "Priority must be a whole number from 0 to 100." in response.content.decode()
    task.refresh_from_db()
    assert task.priority == 50


def test_operator_gets_a_read_only_task_page(client, operator):
    task = dead_letter_task()
    Run.objects.create(
        task=task, worker_id="@backend-1", agent="simulated", exit_code=2, stderr_tail="boom <b>"
    )
    response = logged_in(client, operator).get(
        reverse("admin:tasks_app_task_change", args=[task.pk])
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert 'name="goal"' not in body
    assert "boom &lt;b&gt;" in body
    assert "Fix the configuration" in body  # the error type's hint


def test_list_filters_search_and_date_hierarchy(client, viewer):
    dead_letter_task("needle in the haystack")
    other = lifecycle.submit("something else", lane="frontend", risk="medium", actor="cli")
    logged_in(client, viewer)
    response = client.get(CHANGELIST, {"q": "needle"})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list.values_list("goal", flat=True)) == [
        "needle in the haystack"
    ]
    for params in (
        {"status__exact": "dead_letter"},
        {"lane__exact": "backend"},
        {"risk__exact": "low"},
        {"last_error_type": "config_error"},
        {"q": "needle", "created_at__year": str(other.created_at.year)},
    ):
        response = client.get(CHANGELIST, params)
        assert response.status_code == 200
        assert response.context["cl"].result_count == 1, params
    body = client.get(CHANGELIST).content.decode()
    assert "needle in the haystack" in body
    assert "config_error" in body


def test_goal_with_html_is_escaped_in_the_list(client, viewer):
    lifecycle.submit("<script>alert(1)</script>", lane="qa", actor="cli")
    body = logged_in(client, viewer).get(CHANGELIST).content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_unknown_task_id_is_not_a_server_error(client, superuser):
    client.force_login(superuser)
    for ident in ("999999", "abc"):
        response = client.get(reverse("admin:tasks_app_task_change", args=[ident]), follow=True)
        assert response.status_code == 200


def test_history_and_runs_are_read_only(client, superuser):
    task = dead_letter_task()
    run = Run.objects.create(task=task, worker_id="@backend-1", agent="simulated")
    history = task.history.first()
    client.force_login(superuser)
    assert client.get(reverse("admin:tasks_app_taskhistory_changelist")).status_code == 200
    assert client.get(reverse("admin:tasks_app_run_changelist")).status_code == 200
    assert client.get(reverse("admin:tasks_app_taskhistory_add")).status_code == 403
    assert client.get(reverse("admin:tasks_app_run_add")).status_code == 403
    url = reverse("admin:tasks_app_taskhistory_change", args=[history.pk])
    assert 'name="actor"' not in client.get(url).content.decode()
    client.post(url, {"actor": "forged", "to_status": "completed"})
    history.refresh_from_db()
    assert history.actor == "cli"
    url = reverse("admin:tasks_app_taskhistory_delete", args=[history.pk])
    assert client.post(url, {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:tasks_app_run_change", args=[run.pk])).status_code == 200


def test_history_search_by_task_number(client, viewer):
    task = dead_letter_task()
    lifecycle.submit("other", lane="qa", actor="cli")
    response = logged_in(client, viewer).get(
        reverse("admin:tasks_app_taskhistory_changelist"), {"q": f"#{task.pk}"}
    )
    assert response.status_code == 200
    assert {h.task_id for h in response.context["cl"].result_list} == {task.pk}


def test_every_model_is_registered(client, viewer):
    from django.contrib import admin

    from chatops_app.models import ChatLink, Notification
    from workers_app.models import Worker

    for model in (Task, TaskHistory, Run, Worker, ChatLink, Notification):
        assert admin.site.is_registered(model), model
    response = logged_in(client, viewer).get(reverse("admin:index"))
    assert response.status_code == 200
    body = response.content.decode()
    for name in ("Tasks", "Task history", "Runs", "Workers", "Notifications"):
        assert name in body


def test_error_type_filter_offers_the_known_types(client, viewer):
    dead_letter_task()
    response = logged_in(client, viewer).get(CHANGELIST, {"last_error_type": "review_blocked"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0
    assert "agent_missing" in response.content.decode()


@pytest.mark.parametrize("term", ["²", "99999999999999999999", "#12"])
def test_history_admin_search_by_odd_numbers_is_not_a_500(client, superuser, term):
    task = lifecycle.submit("Searchable", lane="qa", actor="cli")
    client.force_login(superuser)
    response = client.get(reverse("admin:tasks_app_taskhistory_changelist"), {"q": term})
    assert response.status_code == 200
    response = client.get(reverse("admin:tasks_app_taskhistory_changelist"), {"q": str(task.pk)})
    assert "Searchable" in response.content.decode() or f"#{task.pk}" in response.content.decode()
