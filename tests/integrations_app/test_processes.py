"""`syncgithub` as runfactory runs it: a real process, started when a token is set, stopped by
Ctrl-C like the rest of the factory."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tasks_app.choices import DeliveryState
from tasks_app.models import Task
from tests.conftest import REPO_ROOT
from tests.integrations_app.helpers import ready_for_pull_request
from tests.standins.github_api import REPO, TOKEN, GitHubStandIn
from tests.waiting import wait_for
from workers_app.models import Worker


@pytest.mark.slow
def test_runfactory_supervises_syncgithub_which_opens_the_pull_request(
    subprocess_env, tmp_path, settings
):
    settings.VIBE_GITHUB_TOKEN = TOKEN  # without one, the work would be blocked at once
    task = ready_for_pull_request(reviewed=False)
    Worker.objects.all().delete()  # only the GitHub sync (and the notifications sender) run
    with GitHubStandIn() as github:
        env = {
            **subprocess_env,
            "VIBE_GITHUB_TOKEN": TOKEN,
            "VIBE_GITHUB_API_URL": github.url,
            "VIBE_GITHUB_REPO": REPO,
            "VIBE_GITHUB_POLL_SECONDS": "0",
        }
        log = tmp_path / "factory.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "manage.py"), "runfactory", "--no-web"],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for(
                    lambda: (
                        Task.objects.get(pk=task.pk).delivery_state == DeliveryState.AWAITING_MERGE
                    ),
                    what="the pull request to be opened",
                )
            finally:
                proc.send_signal(signal.SIGINT)
                code = proc.wait(60)
                print(log.read_text())  # pytest shows it if the wait timed out
        output = log.read_text()
        assert code == 0, output
        assert len(github.calls("POST", f"/repos/{REPO}/pulls")) == 1
        assert f"GitHub: {REPO}" in output and "not polling" in output
        assert "Vibe Factory stopped." in output
