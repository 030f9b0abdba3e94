"""The GitHub REST client against the stand-in: headers, ETags, rate limits, typed errors."""

from __future__ import annotations

import socket
import subprocess

import pytest

from integrations_app.github import (
    GitHub,
    GitHubError,
    NotConfigured,
    RateLimited,
    configured_repo,
    repo_from_remote_url,
)
from integrations_app.models import SyncState
from tests.standins.github_api import REPO, TOKEN

pytestmark = pytest.mark.django_db


def test_requests_carry_the_token_media_type_and_api_version(gh_client, github):
    assert gh_client.default_branch() == "main"
    sent = github.requests[-1]
    assert sent.path == f"/repos/{REPO}"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["accept"] == "application/vnd.github+json"
    assert sent.headers["x-github-api-version"] == "2022-11-28"
    assert sent.headers["user-agent"].startswith("vibe-factory")


def test_a_second_conditional_get_sends_the_kept_etag_and_gets_304(gh_client, github):
    pr = github.add_pull("vibe/x")
    first = gh_client.pull(pr["number"], conditional=True)
    assert first.status == 200 and first.data["number"] == pr["number"]
    assert "if-none-match" not in github.requests[-1].headers
    gh_client.keep_etag(first)

    # A new client (a restarted process): the ETag was kept in the database.
    second = GitHub().pull(pr["number"], conditional=True)
    assert github.requests[-1].headers["if-none-match"] == first.etag
    assert second.status == 304 and second.not_modified and second.data is None
    assert SyncState.objects.filter(key__startswith="etag:").count() == 1

    github.merge(pr["number"])
    third = GitHub().pull(pr["number"], conditional=True)
    assert third.status == 200 and third.data["merged"] is True


def test_no_requests_left_waits_until_the_reset_then_tries_again(gh_client, github, fake_time):
    pr = github.add_pull("vibe/x")
    github.rate_limit_next(seconds=30)
    answer = gh_client.pull(pr["number"])
    assert answer.data["number"] == pr["number"]
    assert len(github.calls("GET", f"/repos/{REPO}/pulls/{pr['number']}")) == 2
    assert len(fake_time.slept) == 1 and 28 <= fake_time.slept[0] <= 32


def test_a_secondary_rate_limit_waits_its_retry_after(gh_client, github, fake_time):
    github.secondary_limit_next(retry_after=7)
    assert gh_client.default_branch() == "main"
    assert fake_time.slept == [7.0]


def test_a_rate_limit_longer_than_max_wait_is_raised_not_slept_through(github, fake_time):
    limited = GitHub(clock=fake_time.clock, sleep=fake_time.sleep, max_wait=10)
    github.rate_limit_next(seconds=600)
    with pytest.raises(RateLimited) as caught:
        limited.default_branch()
    assert caught.value.transient and caught.value.retry_after > 500
    assert fake_time.slept == []
    with pytest.raises(RateLimited):  # and the next call does not spend a request on it
        limited.default_branch()
    assert len(github.requests) == 1


def test_errors_carry_githubs_own_message(gh_client, github):
    body = {
        "message": "Validation Failed",
        "errors": [{"resource": "PullRequest", "code": "custom", "message": "No commits between"}],
    }
    github.fail_next(422, body, path="/pulls")
    with pytest.raises(GitHubError) as caught:
        gh_client.create_pull(head="a", base="main", title="t", body="b")
    assert caught.value.status == 422 and not caught.value.transient
    assert caught.value.github_message == "Validation Failed: No commits between"
    assert "HTTP 422" in str(caught.value)


def test_server_errors_and_network_faults_are_transient(gh_client, github, settings):
    github.fail_next(502, {"message": "Server Error"})
    with pytest.raises(GitHubError) as caught:
        gh_client.default_branch()
    assert caught.value.transient and caught.value.status == 502

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(GitHubError) as caught:
        GitHub(api_url=f"http://127.0.0.1:{port}", timeout=2).default_branch()
    assert caught.value.transient and "could not reach GitHub" in str(caught.value)


def test_a_bad_token_says_which_setting_to_check(github):
    with pytest.raises(GitHubError) as caught:
        GitHub(token="wrong").default_branch()
    assert caught.value.status == 401 and "VIBE_GITHUB_TOKEN" in str(caught.value)
    assert "Bad credentials" in str(caught.value)


def test_write_access_is_admin_maintain_or_write(gh_client, github):
    github.permissions.update(ada="admin", max="maintain", wes="write", tri="triage", rea="read")
    assert [gh_client.can_write(u) for u in ("ada", "max", "wes", "tri", "rea", "nobody")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/octo/factory.git",
        "https://github.com/octo/factory",
        "https://token@github.com/octo/factory.git",
        "git@github.com:octo/factory.git",
        "ssh://git@github.com/octo/factory.git",
        "ssh://git@github.com:22/octo/factory",
    ],
)
def test_the_repository_is_read_from_https_and_ssh_remote_urls(url):
    assert repo_from_remote_url(url) == "octo/factory"


def test_without_vibe_github_repo_the_workspace_remote_names_the_repository(settings, tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "remote", "add", "origin", "git@github.com:acme/shop.git"],
        check=True,
    )
    settings.VIBE_GITHUB_REPO = ""
    settings.VIBE_WORKSPACE = str(tmp_path)
    settings.VIBE_GIT_REMOTE = None
    assert configured_repo() == "acme/shop"

    settings.VIBE_WORKSPACE = ""
    with pytest.raises(NotConfigured, match="set VIBE_GITHUB_REPO"):
        configured_repo()
