"""Odd input a person can type into the board's address bar or the CLI: never a 500."""

from __future__ import annotations

import io
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from tasks_app import lifecycle
from tasks_app.models import Task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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


def test_submit_after_an_id_beyond_any_task_is_refused_cleanly():
    with pytest.raises(lifecycle.InvalidInput, match="does not exist"):
        lifecycle.submit("x", lane="backend", actor="cli", depends_on=[10**20])
    assert not Task.objects.exists()


@pytest.mark.parametrize("term", ["²", "99999999999999999999", "#12"])
def test_history_admin_search_by_odd_numbers_is_not_a_500(client, superuser, term):
    task = lifecycle.submit("Searchable", lane="qa", actor="cli")
    client.force_login(superuser)
    response = client.get(reverse("admin:tasks_app_taskhistory_changelist"), {"q": term})
    assert response.status_code == 200
    response = client.get(reverse("admin:tasks_app_taskhistory_changelist"), {"q": str(task.pk)})
    assert "Searchable" in response.content.decode() or f"#{task.pk}" in response.content.decode()


def test_history_actor_filter_with_a_nul_byte_is_not_a_500(client, viewer):
    lifecycle.submit("Filtered", lane="qa", actor="user:vera")
    client.force_login(viewer)
    response = client.get(reverse("tasks_app:history"), {"actor": "ve\x00ra"})
    assert response.status_code == 400  # vibe_project.middleware refuses any NUL in a request


def test_cli_dlq_limit_beyond_the_database_is_a_usage_error():
    with pytest.raises(CommandError, match="at most") as info:
        call_command("vibe", "dlq", "--limit", "99999999999999999999", stdout=StringIO())
    assert info.value.returncode == 2


def test_cli_submit_from_stdin_that_is_not_utf8_is_refused_cleanly(monkeypatch):
    raw = io.TextIOWrapper(io.BytesIO(b"\xff\xfe goal\n"), errors="surrogateescape")
    monkeypatch.setattr("sys.stdin", raw)
    with pytest.raises(CommandError, match="cannot read it"):
        call_command("vibe", "submit", "--from-file", "-", "--lane", "qa", stdout=StringIO())
    assert not Task.objects.exists()


def test_cli_submit_from_file_refuses_true_as_a_prerequisite(tmp_path):
    first = lifecycle.submit("Prerequisite", lane="qa", actor="cli")
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"goal": "x", "lane": "qa", "after": [True]}) + "\n")
    with pytest.raises(CommandError, match="list of task ids"):
        call_command("vibe", "submit", "--from-file", str(path), stdout=StringIO())
    assert list(Task.objects.values_list("pk", flat=True)) == [first.pk]


def test_history_page_lane_chip_carries_the_lanes_css_class(client, viewer):
    lifecycle.submit("Coloured", lane="qa", actor="cli")
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:history")).content.decode()
    assert '<span class="lane lane-qa">QA</span>' in html


def test_writers_queue_handles_of_finished_threads_are_closed(tmp_path):
    """runserver starts a thread per request; each lifecycle write there opened the lock file
    and never closed it, until the process ran out of file descriptors."""
    import contextlib
    import gc
    import os
    import threading

    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        pytest.skip("needs /proc to count open files")
    path = str(tmp_path / "vibe.db")

    def open_handles() -> int:
        count = 0
        for name in os.listdir(fd_dir):
            with contextlib.suppress(OSError):  # closed while listing
                count += os.readlink(f"{fd_dir}/{name}") == f"{path}-writers"
        return count

    def one_request() -> None:
        assert lifecycle._writer_queue_fd(path) is not None

    for _ in range(20):
        thread = threading.Thread(target=one_request)
        thread.start()
        thread.join()
    gc.collect()
    assert open_handles() == 0
