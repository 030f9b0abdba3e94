"""The worker admin: Pause/Resume through the lifecycle; status and load never typed in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.ages import ago
from workers_app.models import Worker, WorkerStatus

CHANGELIST = reverse("admin:workers_app_worker_changelist")


def logged_in(client, user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client.force_login(user)
    return client


def run_action(client, action: str, *worker_ids: str):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: list(worker_ids), "index": 0}
    response = client.post(CHANGELIST, data)
    return response, [str(m) for m in get_messages(response.wsgi_request)]


def action_names(client) -> set[str]:
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    form = response.context["action_form"]
    return {name for name, _ in form.fields["action"].choices} if form else set()


def status_of(worker_id: str) -> str:
    return Worker.objects.get(pk=worker_id).status


def test_operator_pauses_and_resumes_a_worker(client, operator):
    logged_in(client, operator)
    assert {"pause_workers", "resume_workers"} <= action_names(client)
    response, msgs = run_action(client, "pause_workers", "@qa-1")
    assert response.status_code == 302
    assert status_of("@qa-1") == WorkerStatus.PAUSED
    assert "Paused: @qa-1." in msgs
    assert lifecycle.claim_next("@qa-1") is None  # a paused worker claims nothing
    run_action(client, "resume_workers", "@qa-1")
    assert status_of("@qa-1") == WorkerStatus.ONLINE


def test_pausing_a_paused_worker_shows_the_lifecycle_message(client, operator):
    lifecycle.pause_worker("@qa-1", actor="cli")
    _, msgs = run_action(logged_in(client, operator), "pause_workers", "@qa-1", "@backend-1")
    assert "Worker @qa-1 is already paused." in msgs
    assert "Paused: @backend-1." in msgs
    assert status_of("@backend-1") == WorkerStatus.PAUSED


def test_viewer_has_no_worker_actions_and_a_forged_post_changes_nothing(client, viewer):
    logged_in(client, viewer)
    assert not action_names(client) & {"pause_workers", "resume_workers"}
    response, _ = run_action(client, "pause_workers", "@qa-1", "@backend-1")
    assert response.status_code in (200, 302)
    assert status_of("@qa-1") == WorkerStatus.ONLINE
    assert status_of("@backend-1") == WorkerStatus.ONLINE


def test_list_shows_load_heartbeat_and_derived_status(client, viewer):
    Worker.objects.filter(pk="@backend-1").update(
        active_tasks=1, last_heartbeat=timezone.now() - timedelta(seconds=5)
    )
    response = logged_in(client, viewer).get(CHANGELIST)
    assert response.status_code == 200
    body = response.content.decode()
    assert "1/2" in body  # @backend-1: active / capacity
    assert "never" in body  # workers that never heartbeated
    rows = {w.pk: w for w in response.context["cl"].result_list}
    assert rows["@backend-1"].display_status == WorkerStatus.ONLINE
    assert rows["@qa-1"].display_status == WorkerStatus.OFFLINE  # no heartbeat: offline


def test_change_form_keeps_status_and_load_read_only(client, superuser):
    Worker.objects.filter(pk="@qa-1").update(active_tasks=1)
    client.force_login(superuser)
    url = reverse("admin:workers_app_worker_change", args=["@qa-1"])
    assert 'name="status"' not in client.get(url).content.decode()
    response = client.post(
        url,
        {
            "tier": "lead",
            "capacity_limit": 4,
            "priority_score": 90,
            "agent_profile": "claude",
            "status": "offline",
            "active_tasks": 0,
            "lane": "backend",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    worker = Worker.objects.get(pk="@qa-1")
    assert (worker.tier, worker.capacity_limit, worker.priority_score) == ("lead", 4, 90)
    assert worker.agent_profile == "claude"
    assert worker.status == WorkerStatus.ONLINE
    assert worker.active_tasks == 1
    assert worker.lane == "qa"


def test_adding_a_worker(client, superuser):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:workers_app_worker_add"),
        {
            "worker_id": "@backend-2",
            "lane": "backend",
            "tier": "junior",
            "capacity_limit": 1,
            "priority_score": 40,
            "agent_profile": "",
        },
    )
    assert response.status_code == 302
    worker = Worker.objects.get(pk="@backend-2")
    assert (worker.lane, worker.status, worker.active_tasks) == ("backend", "online", 0)


def test_unknown_worker_is_not_a_server_error(client, superuser):
    client.force_login(superuser)
    response = client.get(reverse("admin:workers_app_worker_change", args=["@nobody"]), follow=True)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "never"),
        (3, "3s ago"),
        (125, "2m ago"),
        (7200, "2h ago"),
        (200_000, "2d ago"),
        # A clock a little ahead reads as now (chat's copy once said "-5s ago").
        (-5, "0s ago"),
    ],
)
def test_ages_read_the_same_everywhere(seconds, text):
    assert ago(None if seconds is None else timedelta(seconds=seconds)) == text
