"""What operators rely on: the health check, the Prometheus exposition, login throttling and
the proxy header, each through the real views and settings."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.models import Run
from tests.conftest import REPO_ROOT
from workers_app.models import Worker

pytestmark = pytest.mark.django_db


def test_healthz_needs_no_login_and_says_nothing_more(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_is_503_while_a_migration_is_not_applied(client):
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'tasks_app' AND name = '0008_delivery_roles'"
        )
    response = client.get("/healthz")
    assert response.status_code == 503 and response.content == b"unavailable\n"


def scrape(client, token: str | None = "s3cret"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get("/metrics/prometheus", headers=headers)


def test_prometheus_is_off_without_a_token_and_refuses_a_wrong_one(client, settings):
    settings.VIBE_METRICS_TOKEN = ""
    assert scrape(client).status_code == 404
    settings.VIBE_METRICS_TOKEN = "s3cret"
    assert scrape(client, None).status_code == 401
    assert scrape(client, "wrong").status_code == 401
    assert scrape(client, "sécret").status_code == 401  # non-ASCII: refused, never a 500


def test_prometheus_figures_come_from_the_database(client, settings):
    settings.VIBE_METRICS_TOKEN = "s3cret"
    lifecycle.submit("One", lane="backend", actor="cli")
    lifecycle.submit("Two", lane="backend", actor="cli")
    dead = lifecycle.submit("Three", lane="qa", actor="cli", max_attempts=1)
    claimed = lifecycle.claim_next("@qa-1")
    lifecycle.fail(dead.pk, worker_id="@qa-1", token=claimed.claim_token, error_type="timeout")
    Run.objects.create(
        task=dead,
        worker_id="@qa-1",
        attempt=1,
        role="builder",
        outcome="timeout",
        cost_usd=Decimal("0.25"),
        started_at=timezone.now(),
    )
    Worker.objects.filter(pk="@qa-1").update(last_heartbeat=timezone.now())
    response = scrape(client)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    assert 'vibe_tasks{lane="backend",status="pending"} 2.0' in text
    assert "vibe_dead_letter_tasks 1.0" in text
    assert 'vibe_runs_total{outcome="timeout",role="builder"} 1.0' in text
    assert 'vibe_run_failures_total{error_type="timeout"} 1.0' in text
    assert 'vibe_workers{state="live"} 1.0' in text
    assert "vibe_spend_usd_total 0.25" in text
    assert 'vibe_outbox_pending{channel="slack"} 1.0' in text  # the dead letter's notification


def test_logins_are_throttled_per_username_and_address(client, settings, viewer):
    settings.AXES_FAILURE_LIMIT = 3
    url = reverse("login")
    for _ in range(3):
        page = client.post(url, {"username": viewer.username, "password": "wrong"})
        assert page.status_code in (200, 429)
    locked = client.post(url, {"username": viewer.username, "password": "pw-" + viewer.username})
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    # Another person from the same address is not locked out by someone else's typos.
    other = client.post(url, {"username": "someone-else", "password": "x"})
    assert other.status_code == 200


def test_a_good_login_still_works_and_resets_the_count(client, viewer):
    url = reverse("login")
    client.post(url, {"username": viewer.username, "password": "wrong"})
    done = client.post(url, {"username": viewer.username, "password": "pw-" + viewer.username})
    assert done.status_code == 302


@pytest.mark.parametrize(
    "trust, expected", [("0", "None"), ("1", "('HTTP_X_FORWARDED_PROTO', 'https')")]
)
def test_the_proxy_header_is_trusted_only_when_told(trust, expected):
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "x" * 60,
        "DJANGO_ALLOWED_HOSTS": "factory.example.com",
        "DJANGO_TRUST_PROXY": trust,
        "DJANGO_SETTINGS_MODULE": "vibe_project.settings",
    }
    code = "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == expected
