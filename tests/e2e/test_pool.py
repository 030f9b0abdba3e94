"""The worker pool in a real browser: a silent worker reads offline and is offered Retire (not
Resume); retiring asks first, swaps the row, and the worker leaves the pool until asked for."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

pytestmark = [pytest.mark.e2e]


def test_a_silent_worker_is_retired_from_the_pool(
    page, live_server, demo_board, operator, artifacts, login, axe
):
    from django.utils import timezone

    from tasks_app import lifecycle
    from workers_app.models import Worker

    then = timezone.now() - timedelta(minutes=12)
    Worker.objects.filter(pk="@frontend-1").update(last_heartbeat=then)
    lifecycle.pause_worker("@frontend-1", actor="cli")  # paused, and its process is gone
    login(page, live_server, operator.username)
    page.goto(f"{live_server.url}/workers/")
    row = page.locator("tr.worker-row", has_text="@frontend-1")
    assert "Offline (no heartbeat for 12m)" in row.inner_text()
    assert row.get_by_role("button", name="Resume worker @frontend-1").count() == 0
    assert page.get_by_role("button", name="Pause worker @qa-1").is_visible()  # alive
    page.screenshot(path=str(artifacts / "pool-silent-worker.png"), full_page=True)
    assert axe(page) == []

    page.evaluate("window.vibePaused = true")  # no refresh between the click and the swap
    page.evaluate("window.__noReload = 1")
    row.get_by_role("button", name="Retire worker @frontend-1").click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for()
    assert "Retire worker @frontend-1? It leaves the pool" in dialog.inner_text()
    page.screenshot(path=str(artifacts / "pool-retire-confirm.png"), full_page=True)
    page.locator("#confirm-yes").click()
    page.locator("tr.worker-row", has_text="@frontend-1").get_by_text("Retired").wait_for()
    assert "Worker @frontend-1 retired." in page.locator("#messages").inner_text()
    assert page.evaluate("window.__noReload") == 1
    assert Worker.objects.get(pk="@frontend-1").is_retired

    page.goto(f"{live_server.url}/workers/")
    assert page.locator("tr.worker-row", has_text="@frontend-1").count() == 0
    page.get_by_role("link", name="Show retired").click()
    page.wait_for_url(re.compile(r"retired=1"))
    assert page.locator("tr.worker-row", has_text="@frontend-1").count() == 1
    page.screenshot(path=str(artifacts / "pool-show-retired.png"), full_page=True)
    assert axe(page) == []
