"""Browser tests: the real app on pytest-django's live server, driven by Playwright in Debian's
headless Chromium, with axe-core injected for accessibility checks.

Playwright's sync API runs an event loop in this thread, which makes Django's async-safety check
refuse database calls from the test; the live server runs in its own thread, so it is safe to
switch that check off here.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE_JS = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture(autouse=True)
def migration_rows(transactional_db):
    """Put back the rows the data migrations made (the default worker pool and the roles).

    Live-server tests commit for real, so the database is flushed between them, and these rows
    go with it. Running the migrations' own functions again keeps one definition of both.
    """
    from tests.conftest import _reinstall_migration_rows

    _reinstall_migration_rows()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed; run bin/ensure-test-deps")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def log_in(page, live_server, username: str, password: str | None = None) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password or f"pw-{username}")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def axe_violations(page, impacts=("serious", "critical")) -> list[str]:
    """Run axe-core on the page; describe each serious or critical violation."""
    if not AXE_JS.exists():
        pytest.fail("node_modules/axe-core is missing; run bin/ensure-test-deps")
    page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    found = []
    for violation in result["violations"]:
        if violation["impact"] in impacts:
            targets = [node["target"] for node in violation["nodes"][:3]]
            found.append(
                f"{violation['id']} ({violation['impact']}): {violation['help']} {targets}"
            )
    return found


# --- Demo data: a believable factory floor, made through the lifecycle ----------------------


def _worker(worker_id: str):
    from django.utils import timezone

    from workers_app.models import Worker

    Worker.objects.filter(pk=worker_id).update(last_heartbeat=timezone.now())
    return Worker.objects.get(pk=worker_id)


def _work(lane: str, worker_id: str, goal: str, **submit):
    """Submit a task and have the lane's worker claim it at once."""
    from tasks_app import lifecycle

    submit.setdefault("priority", 100)
    task = lifecycle.submit(goal, lane=lane, actor="cli", **submit)
    claimed = lifecycle.claim_next(_worker(worker_id))
    assert claimed is not None and claimed.pk == task.pk, (goal, claimed)
    return claimed


def seed_demo_board() -> dict:
    """Tasks in every column, runs with output, a blocked audit, and 24 h of throughput."""
    from django.utils import timezone

    from tasks_app import lifecycle
    from tasks_app.models import Run, Task, TaskHistory

    notable: dict = {}

    # Completed work over the last day, for the throughput chart.
    for i in range(14):
        lane, wid = [("qa", "@qa-1"), ("data", "@data-analyst"), ("ux", "@ux-designer")][i % 3]
        t = _work(lane, wid, f"Regression check #{i + 1} for the release", pipeline="none")
        lifecycle.complete(
            t.pk,
            worker_id=wid,
            token=t.claim_token,
            result={"verdict": "PASS", "score": 90, "findings": [], "summary": "all green"}
            if lane != "qa"
            else {"verdict": "PASS", "score": 100, "findings": []},
        )
        TaskHistory.objects.filter(task=t, to_status="completed").update(
            created_at=timezone.now() - timedelta(hours=(i * 5) % 23, minutes=7)
        )
    for i in range(3):
        t = _work(
            "qa", "@qa-1", f"Nightly e2e suite, shard {i + 1}", pipeline="none", max_attempts=3
        )
        lifecycle.fail(t.pk, worker_id="@qa-1", token=t.claim_token, error_type="timeout")
        TaskHistory.objects.filter(task=t, to_status="pending", from_status="in_progress").update(
            created_at=timezone.now() - timedelta(hours=3 + i * 4)
        )

    # Dead letter: real failures with output kept.
    for goal, error_type, text in [
        (
            "Migrate invoices to the new tax table",
            "agent_exit",
            "alembic.util: Can't locate revision",
        ),
        ("Add OAuth login with GitHub", "agent_missing", "claude: command not found"),
        ("Speed up the search index rebuild", "timeout", "killed after 900 s"),
    ]:
        t = _work("backend", "@backend-1", goal, max_attempts=1, pipeline="none")
        Run.objects.create(
            task=t,
            worker_id="@backend-1",
            attempt=1,
            agent="claude-code",
            exit_code=1 if error_type != "timeout" else -9,
            duration_seconds=42.0,
            finished_at=timezone.now(),
            stdout_tail="Reading the repository…\nPlanning changes to 3 files\n",
            stderr_tail=text,
            outcome=error_type,
        )
        lifecycle.fail(
            t.pk, worker_id="@backend-1", token=t.claim_token, error_type=error_type, error=text
        )
        notable.setdefault("dead", []).append(t.pk)

    # A backend change blocked by a CRITICAL security finding.
    work = _work("backend", "@backend-1", "Let admins impersonate users for support")
    lifecycle.complete(work.pk, worker_id="@backend-1", token=work.claim_token, result={})
    review = lifecycle.claim_next(_worker("@security-1"))
    lifecycle.complete(
        review.pk,
        worker_id="@security-1",
        token=review.claim_token,
        result={
            "verdict": "FAIL",
            "score": 20,
            "summary": "Impersonation skips the audit log.",
            "findings": [
                {
                    "severity": "CRITICAL",
                    "title": "Impersonation is not audited",
                    "file": "accounts/views.py",
                },
                {"severity": "MEDIUM", "title": "Session not rotated after switch"},
            ],
        },
    )
    notable["blocked"] = work.pk

    # Review needed: frontend work waiting for its UX audit.
    ui = _work("frontend", "@frontend-1", "Redesign the pricing page for mobile")
    lifecycle.complete(
        ui.pk, worker_id="@frontend-1", token=ui.claim_token, result={"summary": "done"}
    )
    notable["review"] = ui.pk

    # In progress, with a live run.
    running = _work("backend", "@backend-1", "Add rate limiting to the public API", pipeline="none")
    Run.objects.create(
        task=running,
        worker_id="@backend-1",
        attempt=1,
        agent="claude-code",
        stdout_tail="Reading api/throttling.py\nWriting tests/test_throttle.py\n",
    )
    _work("data", "@data-analyst", "Validate the March revenue export", pipeline="none")
    notable["running"] = running.pk

    # Awaiting approval (high risk) and plain pending work.
    notable["approval"] = lifecycle.submit(
        "Rotate the production database credentials",
        lane="backend",
        risk="high",
        actor="slack:U024BE7LH",
    ).pk
    lifecycle.submit(
        "Purge soft-deleted accounts older than 90 days", lane="data", risk="high", actor="cli"
    )
    for goal, lane, priority in [
        ("Add dark mode to the settings screen", "frontend", 60),
        ("Write API docs for the webhooks endpoint", "backend", 40),
        ("Fix the date picker on Safari", "frontend", 80),
        ("Cache the exchange-rate lookups", "backend", 70),
        ("Smoke-test the checkout flow", "qa", 50),
    ]:
        lifecycle.submit(goal, lane=lane, priority=priority, actor="user:alice")
    for wid in ("@backend-1", "@frontend-1", "@qa-1", "@security-1", "@ux-designer"):
        _worker(wid)
    # Ages that look like a working day rather than "0s" everywhere (screenshots only).
    for i, pk in enumerate(Task.objects.order_by("pk").values_list("pk", flat=True)):
        minutes = 4 + (i * 37) % 540
        Task.objects.filter(pk=pk).update(created_at=timezone.now() - timedelta(minutes=minutes))
    return notable


@pytest.fixture
def demo_board(transactional_db) -> dict:
    return seed_demo_board()


# Helpers handed to the tests as fixtures (conftest modules are not importable by name).


@pytest.fixture
def login():
    return log_in


@pytest.fixture
def axe():
    return axe_violations


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
