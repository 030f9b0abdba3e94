"""The red team's smaller findings in the worker: verdicts, workspaces, worker ids (issue 11)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task
from tasks_app.verdicts import VerdictError, parse_verdict
from workers_app import workspace
from workers_app.models import Worker

FENCE = "```"


def reload(task: Task) -> Task:
    return Task.objects.get(pk=task.pk)


# --- verdicts no parser can read are bad verdicts ------------------------------------------------


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ('{"verdict": "PASS", "findings": ' + "[" * 30_000 + "]" * 30_000 + "}", "too deeply"),
        ('{"verdict": "PASS", "score": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
    ids=["30000-deep", "5000-digit-number"],
)
def test_a_verdict_block_the_parser_cannot_read_is_a_verdict_error(block, message):
    with pytest.raises(VerdictError, match=message):
        parse_verdict(f"review done\n{FENCE}json\n{block}\n{FENCE}\n", lane="security")


@pytest.mark.slow
def test_a_30000_deep_verdict_from_a_real_agent_is_bad_verdict_not_worker_error(fleet):
    task = lifecycle.submit("Audit it", lane="security", actor="cli", max_attempts=1)
    fleet.run("@security-1", "security", "verdict_agent.py", env={"TEST_VERDICT": "deep"})
    task = reload(task)
    assert task.status == Status.DEAD_LETTER
    assert task.last_error_type == "bad_verdict"
    assert "nested too deeply" in task.last_error


# --- a worktrees folder that cannot be made is a workspace error -------------------------------
# Tests run as root, whom a read-only mode does not stop; a folder under a regular file fails
# for root too (NotADirectoryError), through the same OSError path as a read-only disk.


@pytest.fixture
def under_a_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file\n")
    return blocker / "worktrees"


@pytest.mark.django_db
def test_worktrees_folder_that_cannot_be_made_is_a_workspace_error(
    tmp_path, settings, under_a_file
):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        [
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=T",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "start",
        ],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    settings.VIBE_WORKSPACE, settings.VIBE_WORKTREES_DIR = str(repo), str(under_a_file)
    task = lifecycle.submit("Edit app", lane="backend", actor="cli")
    with pytest.raises(workspace.WorkspaceError) as caught:
        workspace.prepare(task)
    assert str(under_a_file) in str(caught.value)
    assert "Not a directory" in str(caught.value)


@pytest.mark.django_db
def test_scratch_folder_that_cannot_be_made_is_a_workspace_error(settings, under_a_file):
    settings.VIBE_WORKSPACE, settings.VIBE_WORKTREES_DIR = "", str(under_a_file)
    task = lifecycle.submit("Edit app", lane="backend", actor="cli")
    with pytest.raises(workspace.WorkspaceError, match="Not a directory"):
        workspace.prepare(task)
    with pytest.raises(workspace.WorkspaceError, match="Not a directory"):
        workspace.agent_home(task)


@pytest.mark.slow
def test_a_worker_whose_worktrees_folder_cannot_be_made_fails_the_task_as_workspace_error(
    fleet, under_a_file
):
    task = lifecycle.submit("Edit app", lane="backend", actor="cli", max_attempts=1)
    fleet.run("@backend-1", "backend", "ok_agent.py", env={"VIBE_WORKTREES_DIR": str(under_a_file)})
    task = reload(task)
    assert task.last_error_type == "workspace_error"
    assert str(under_a_file) in task.last_error


# --- a worker id with a slash --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_worker_id_with_a_slash_leaves_the_pool_page_working(client, operator):
    Worker.objects.create(worker_id="@a/b", lane="backend")
    client.force_login(operator)
    response = client.get(reverse("workers_app:pool"))
    assert response.status_code == 200
    assert "@a/b" in response.content.decode()
    # Its buttons still reach it.
    url = reverse("workers_app:worker_action", args=["@a/b", "pause"])
    assert client.post(url).status_code in (200, 302)
    assert Worker.objects.get(pk="@a/b").status == "paused"
