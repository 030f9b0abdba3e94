"""Every human act leaves a row: worker pauses and resumes, and each refused attempt, from
every door, with who, where from and why — and the history page shows them."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from chatops_app.grammar import execute
from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import AuditEntry

pytestmark = pytest.mark.django_db


def last() -> AuditEntry:
    return AuditEntry.objects.order_by("-id").first()


def test_pausing_and_resuming_a_worker_is_recorded_from_each_door(client, operator):
    call_command("vibe", "pause", "@backend-1")
    entry = last()
    assert (entry.actor, entry.door, entry.action, entry.target, entry.outcome) == (
        "cli",
        "cli",
        "worker paused",
        "@backend-1",
        "done",
    )
    client.force_login(operator)
    client.post(reverse("workers_app:worker_action", args=["@backend-1", "resume"]))
    entry = last()
    assert (entry.actor, entry.door, entry.action) == ("user:otto", "web", "worker online")


def test_refusals_are_recorded_with_their_reason(client, viewer, operator):
    task = lifecycle.submit("Risky", lane="backend", actor="cli", risk="high")
    client.force_login(viewer)
    response = client.post(reverse("tasks_app:task_action", args=[task.pk, "approve"]))
    assert response.status_code == 403
    entry = last()
    assert (entry.actor, entry.door, entry.action, entry.target, entry.outcome) == (
        "user:vera",
        "web",
        "approve",
        f"task {task.pk}",
        "refused",
    )
    assert entry.reason == "vera may not approve tasks here"

    with pytest.raises(CommandError):
        call_command("vibe", "retry", str(task.pk), "--as", operator.username)  # illegal move
    entry = last()
    assert (entry.actor, entry.action, entry.outcome) == ("user:otto", "retry", "refused")
    assert "only dead letter or blocked tasks can be retried" in entry.reason

    with pytest.raises(CommandError):
        call_command("vibe", "pause", "@backend-1", "--as", viewer.username)
    assert (last().action, last().door, last().target) == ("pause", "cli", "@backend-1")

    reply = execute(f"approve {task.pk}", user=viewer, actor="slack:U0VERA", door="slack")
    assert not reply.ok
    assert (last().actor, last().door, last().reason) == ("slack:U0VERA", "slack", "no permission")
    assert type(task).objects.get(pk=task.pk).status == Status.AWAITING_APPROVAL


def test_the_history_page_shows_other_acts(client, viewer):
    call_command("vibe", "pause", "@backend-1")
    client.force_login(viewer)
    page = client.get(reverse("tasks_app:history")).content.decode()
    assert "Other acts and refusals" in page
    assert "worker paused" in page and "@backend-1" in page
