"""Nothing waits forever: work after a prerequisite that cannot finish says so."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from chatops_app.grammar import execute
from chatops_app.models import Notification
from tasks_app import lifecycle
from tasks_app.models import Task

pytestmark = pytest.mark.django_db


def dead_letter(goal: str = "schema") -> Task:
    task = lifecycle.submit(goal, lane="backend", actor="cli", max_attempts=1, pipeline="none")
    claimed = lifecycle.claim_next("@backend-1")
    lifecycle.fail(task.pk, worker_id="@backend-1", token=claimed.claim_token, error_type="timeout")
    return Task.objects.get(pk=task.pk)


def test_after_a_cancelled_task_is_refused_and_makes_nothing():
    first = lifecycle.submit("schema", lane="backend", actor="cli")
    lifecycle.cancel(first.pk, actor="cli")
    with pytest.raises(lifecycle.InvalidInput, match=f"task {first.pk} is cancelled"):
        lifecycle.submit("migrate", lane="backend", actor="cli", depends_on=[first.pk])
    assert Task.objects.count() == 1
    with pytest.raises(CommandError, match="cancelled and will never complete"):
        call_command("vibe", "submit", "migrate", "--lane", "backend", "--after", str(first.pk))


def test_work_after_a_dead_letter_says_what_it_waits_for_and_people_are_told():
    lifecycle.submit("unrelated", lane="qa", actor="cli")
    first = lifecycle.submit("schema", lane="backend", actor="cli", max_attempts=1)
    later = lifecycle.submit("migrate", lane="backend", actor="cli", depends_on=[first.pk])
    assert later.waiting_summary == ""
    claimed = lifecycle.claim_next("@backend-1")
    assert claimed.pk == first.pk  # the dependant is not claimable yet
    lifecycle.fail(
        first.pk, worker_id="@backend-1", token=claimed.claim_token, error_type="timeout"
    )
    later = Task.objects.get(pk=later.pk)
    assert later.waiting_summary == f"waiting for #{first.pk} (dead letter)"
    note = Notification.objects.filter(task_id=first.pk, event="dead_letter").first().note
    assert f"1 task(s) wait for it: #{later.pk}" in note
    reply = execute(f"task {later.pk}", user=None, actor="cli", door="cli", trusted=True)
    assert reply.data["waiting_for"] == [first.pk]
    assert any(line.startswith(f"waiting for #{first.pk} (dead letter)") for line in reply.lines)

    lifecycle.retry(first.pk, actor="user:alice")  # retrying the prerequisite frees it again
    assert Task.objects.get(pk=later.pk).waiting_summary == ""


def test_the_card_says_what_it_waits_for_without_a_query_per_card(
    client, viewer, django_assert_max_num_queries
):
    first = dead_letter()
    waiting = [
        lifecycle.submit(f"after {n}", lane="backend", actor="cli", depends_on=[first.pk])
        for n in range(5)
    ]
    client.force_login(viewer)
    client.get("/")  # warm the caches
    with django_assert_max_num_queries(40):
        html = client.get("/").content.decode()
    assert html.count(f"waiting for #{first.pk} (dead letter)") == len(waiting)


def test_cancelling_a_prerequisite_tells_people_about_the_work_waiting_for_it():
    first = lifecycle.submit("schema", lane="backend", actor="cli")
    later = lifecycle.submit("migrate", lane="backend", actor="cli", depends_on=[first.pk])
    lifecycle.cancel(first.pk, actor="user:alice")
    told = Notification.objects.filter(task=later, event="blocked")
    assert told.count() == 2  # Slack and Discord
    assert f"waiting for #{first.pk} (cancelled)" in told.first().note
    assert Task.objects.get(pk=later.pk).waiting_summary == f"waiting for #{first.pk} (cancelled)"
