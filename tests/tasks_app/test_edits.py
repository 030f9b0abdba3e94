"""An approval covers what was approved, and every edit of a task is in its history."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from workers_app.models import Worker

pytestmark = pytest.mark.django_db


def rows(task: Task) -> int:
    return TaskHistory.objects.filter(task=task).count()


def test_a_new_goal_for_an_approved_task_needs_approval_again():
    task = lifecycle.submit("Rotate the logs", lane="backend", actor="cli", risk="high")
    lifecycle.approve(task.pk, actor="user:alice")
    task = lifecycle.edit(task.pk, actor="user:mallory", goal="Drop the production database")
    assert task.status == Status.AWAITING_APPROVAL and task.approved_by == ""
    row = task.history.order_by("id").last()
    assert row.actor == "user:mallory" and (row.from_status, row.to_status) == (
        "pending",
        "awaiting_approval",
    )
    assert "goal 'Rotate the logs' → 'Drop the production database'" in row.note
    assert "needs approval again" in row.note
    assert lifecycle.claim_next(Worker.objects.get(pk="@backend-1")) is None


def test_priority_edits_keep_the_approval_and_say_old_and_new():
    task = lifecycle.submit("Rotate the logs", lane="backend", actor="cli", risk="high")
    lifecycle.approve(task.pk, actor="user:alice")
    task = lifecycle.edit(task.pk, actor="user:otto", priority=90)
    assert (task.status, task.approved_by, task.priority) == (Status.PENDING, "user:alice", 90)
    assert task.history.order_by("id").last().note == "edited: priority 50 → 90"
    before = rows(task)
    lifecycle.edit(task.pk, actor="user:otto", priority=90)  # no change: no row
    assert rows(task) == before


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.CANCELLED, Status.IN_PROGRESS])
def test_running_and_finished_work_cannot_be_edited(status):
    task = lifecycle.submit("Ship it", lane="backend", actor="cli")
    Task.objects.filter(pk=task.pk).update(status=status)
    before = rows(task)
    with pytest.raises(lifecycle.IllegalTransition, match="can be edited"):
        lifecycle.edit(task.pk, actor="user:otto", goal="Ship something else")
    assert Task.objects.get(pk=task.pk).goal == "Ship it" and rows(task) == before


@pytest.mark.parametrize(
    "kwargs, message",
    [({"goal": "  "}, "the goal is empty"), ({"priority": 101}, "out of range")],
)
def test_bad_edits_change_nothing(kwargs, message):
    task = lifecycle.submit("Ship it", lane="backend", actor="cli")
    before = rows(task)
    with pytest.raises(lifecycle.InvalidInput, match=message):
        lifecycle.edit(task.pk, actor="user:otto", **kwargs)
    assert rows(task) == before


def test_the_admin_shows_a_finished_task_read_only(client, superuser):
    task = lifecycle.submit("Ship it", lane="backend", actor="cli")
    Task.objects.filter(pk=task.pk).update(status=Status.COMPLETED)
    client.force_login(superuser)
    page = client.get(reverse("admin:tasks_app_task_change", args=[task.pk]))
    assert page.status_code == 200
    assert 'name="goal"' not in page.content.decode()


def test_an_admin_goal_edit_of_an_approved_task_sends_it_back(client, superuser):
    task = lifecycle.submit("Rotate the logs", lane="backend", actor="cli", risk="high")
    lifecycle.approve(task.pk, actor="user:alice")
    client.force_login(superuser)
    url = reverse("admin:tasks_app_task_change", args=[task.pk])
    form = {"goal": "Drop the production database", "priority": 50}
    for inline in ("history", "runs"):
        form |= {f"{inline}-TOTAL_FORMS": 0, f"{inline}-INITIAL_FORMS": 0}
    assert client.post(url, form).status_code == 302
    assert Task.objects.get(pk=task.pk).status == Status.AWAITING_APPROVAL
