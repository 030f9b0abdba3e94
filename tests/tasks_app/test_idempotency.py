"""Submitting the same work twice with one idempotency key makes it once."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.management import call_command
from django.db import connection

from tasks_app import lifecycle
from tasks_app.models import Task


@pytest.mark.django_db
def test_the_same_key_returns_the_first_task(capsys):
    call_command("vibe", "submit", "Add a health check", "--lane", "backend", "--key", "ops-17")
    first = Task.objects.get()
    call_command(
        "vibe", "submit", "Add a health check", "--lane", "backend", "--key", "ops-17", "--json"
    )
    out = capsys.readouterr().out
    assert json.loads(out.split("\n", 1)[1])["existing"] is True
    assert Task.objects.count() == 1 and first.history.count() == 1
    again = lifecycle.submit("Something else", lane="qa", actor="cli", key="ops-17")
    assert again.pk == first.pk and again.was_submitted_before
    other = lifecycle.submit("Add a health check", lane="backend", actor="cli", key="ops-18")
    assert other.pk != first.pk
    plain = lifecycle.submit("Add a health check", lane="backend", actor="cli")
    assert not getattr(plain, "was_submitted_before", False)


@pytest.mark.django_db
def test_a_key_too_long_changes_nothing():
    with pytest.raises(lifecycle.InvalidInput, match="the limit is 200"):
        lifecycle.submit("x", lane="backend", actor="cli", key="k" * 201)
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_a_file_line_can_carry_its_key(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"goal": "one", "lane": "backend", "key": "batch-1"}\n'
        '{"goal": "two", "lane": "backend", "deliver": "merge"}\n'
    )
    call_command("vibe", "submit", "--from-file", str(path))
    call_command("vibe", "submit", "--from-file", str(path))
    assert Task.objects.filter(idempotency_key="batch-1").count() == 1
    assert Task.objects.filter(goal="two", delivery="merge").count() == 2


@pytest.mark.django_db(transaction=True)
def test_racing_submissions_with_one_key_make_one_task():
    if connection.vendor == "sqlite" and connection.settings_dict["NAME"].startswith("file:"):
        pytest.skip("needs a database file shared by threads")
    results: list[int] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        barrier.wait()
        try:
            results.append(lifecycle.submit("Same", lane="backend", actor="cli", key="race").pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert Task.objects.filter(idempotency_key="race").count() == 1


@pytest.mark.django_db
def test_the_board_form_makes_its_task_once_when_posted_twice(client, operator):
    import re

    from django.urls import reverse

    client.force_login(operator)
    page = client.get(reverse("tasks_app:submit")).content.decode()
    key = re.search(r'name="key" value="(board:[0-9a-f]+)"', page).group(1)
    form = {"goal": "Once only", "lane": "backend", "priority": "50", "risk": "low"}
    form |= {"delivery": "branch", "key": key}
    client.post(reverse("tasks_app:submit"), form)
    again = client.post(reverse("tasks_app:submit"), form, follow=True)
    assert Task.objects.filter(goal="Once only").count() == 1
    assert "was already submitted from this form" in again.content.decode()
