"""Fixtures of the GitHub door's tests: a stand-in GitHub on 127.0.0.1 and the settings for it."""

from __future__ import annotations

import pytest

from integrations_app.github import GitHub
from tests.standins.github_api import REPO, TOKEN, WEBHOOK_SECRET, GitHubStandIn

BASE_URL = "https://factory.example"


@pytest.fixture
def github(settings, db):
    """The stand-in GitHub, with the factory's settings pointing at it."""
    with GitHubStandIn() as api:
        settings.VIBE_GITHUB_TOKEN = TOKEN
        settings.VIBE_GITHUB_API_URL = api.url
        settings.VIBE_GITHUB_REPO = REPO
        settings.VIBE_GITHUB_WEBHOOK_SECRET = WEBHOOK_SECRET
        settings.VIBE_GITHUB_LABEL = "vibe"
        settings.VIBE_GITHUB_POLL_SECONDS = 60
        settings.VIBE_BASE_URL = BASE_URL
        yield api


class FakeTime:
    """A clock and a sleep the test owns: waits are recorded and pass at once."""

    def __init__(self) -> None:
        import time

        self.now = time.time()
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def gh_client(github, fake_time) -> GitHub:
    """Our GitHub client, its rate-limit waits on the fake clock."""
    return GitHub(clock=fake_time.clock, sleep=fake_time.sleep)
