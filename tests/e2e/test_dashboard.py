"""The dashboard in a real browser: log in, read the seeded board, open a task, retry a
dead-letter card in place, pause auto-refresh, filter by lane, and check accessibility with
axe-core on the board, the task detail and the worker pool."""

from __future__ import annotations

import os
import re
import shutil

import pytest

pytestmark = [pytest.mark.e2e]


def test_operator_reads_the_board_opens_a_task_and_retries_in_place(
    page, live_server, demo_board, operator, artifacts, login, axe
):
    login(page, live_server, operator.username)
    assert page.locator("#metrics").get_by_text("Active workers").is_visible()
    for column in ("pending", "awaiting_approval", "in_progress", "blocked", "dead_letter"):
        assert page.locator(f"#cards-{column} .card").count() >= 1, column
    assert page.locator("#metrics .metric-alert").is_visible()  # dead letter is not zero
    assert page.locator("#throughput svg").count() >= 2
    page.screenshot(path=str(artifacts / "board.png"), full_page=True)
    assert axe(page) == []

    # Open a task in place: the board stays, the URL can be shared and reloaded.
    blocked = demo_board["blocked"]
    page.locator(f"#card-link-{blocked}").click()
    detail = page.locator("#task-detail")
    detail.wait_for()
    assert "Impersonation is not audited" in detail.inner_text()
    assert "CRITICAL" in detail.inner_text()
    assert re.search(rf"[?&]task={blocked}\b", page.url)
    assert page.locator("#live").is_visible()
    page.screenshot(path=str(artifacts / "task-detail.png"), full_page=True)
    assert axe(page) == []

    # Retry a dead-letter card: it moves to Pending without a full page load.
    dead = demo_board["dead"][0]
    page.evaluate("window.__noReload = 'still here'")
    pending_before = int(page.locator("#count-pending").inner_text())
    page.locator(f"#cards-dead_letter #card-retry-{dead}").click()
    page.locator(f"#cards-pending #card-{dead}").wait_for()
    assert page.locator(f"#cards-dead_letter #card-{dead}").count() == 0
    assert page.locator(f"#dlq-row-{dead}").count() == 0
    assert page.evaluate("window.__noReload") == "still here"
    assert int(page.locator("#count-pending").inner_text()) == pending_before + 1
    assert f"Task #{dead} retried." in page.locator("#messages").inner_text()
    assert page.locator("#task-detail").is_visible()  # the open task survived
    assert page.evaluate("document.activeElement.id") == f"card-link-{dead}"  # focus followed


def test_raced_retry_shows_the_lifecycle_message(page, live_server, demo_board, operator, login):
    from tasks_app import lifecycle

    login(page, live_server, operator.username)
    page.evaluate("window.vibePaused = true")  # keep the stale card on screen
    dead = demo_board["dead"][1]
    lifecycle.retry(dead, actor="slack:U1")  # someone in Slack was faster
    page.locator(f"#card-retry-{dead}").click()
    page.locator("#messages .message-error").wait_for()
    assert (
        "only dead letter or blocked tasks can be retried" in page.locator("#messages").inner_text()
    )
    page.locator(f"#cards-pending #card-{dead}").wait_for()


def test_pause_stops_polling_and_refresh_keeps_the_filter_and_open_task(
    page, live_server, demo_board, viewer, login
):
    polls: list[str] = []
    page.on(
        "request",
        lambda r: polls.append(r.url) if r.headers.get("hx-target") == "live" else None,
    )
    login(page, live_server, viewer.username)
    interval = page.get_by_label("Auto-refresh")
    assert interval.input_value() == "5"

    # Filter by lane: the board narrows and the URL says so.
    page.get_by_label("Lane").select_option("frontend")
    page.wait_for_url(re.compile(r"lane=frontend"))
    page.wait_for_function("!document.querySelector('#cards-pending').innerText.includes('API')")
    cards = page.locator("#board .card .lane").all_inner_texts()
    assert cards and set(cards) == {"Frontend"}

    # Open a task, then let a refresh run: both the filter and the task stay.
    page.locator("#board .card a").first.click()
    page.locator("#task-detail").wait_for()
    polls.clear()
    page.evaluate("htmx.trigger('#live', 'vibe:refresh')")
    page.wait_for_timeout(600)
    assert polls and all("lane=frontend" in url for url in polls)
    assert page.locator("#task-detail").is_visible()
    assert set(page.locator("#board .card .lane").all_inner_texts()) == {"Frontend"}

    # Off: no polls for longer than the interval; the choice is remembered by the browser.
    interval.select_option("0")
    assert page.evaluate("localStorage.getItem('vibe:refresh-seconds')") == "0"
    polls.clear()
    page.wait_for_timeout(5_600)
    assert polls == []
    # A hidden tab does not poll either.
    hidden = page.evaluate(
        "() => { window.vibePaused = false;"
        " Object.defineProperty(document, 'visibilityState',"
        " {value: 'hidden', configurable: true});"
        " return window.vibeShouldPoll(); }"
    )
    assert hidden is False


def test_pool_page_is_accessible_and_pause_swaps_the_row(
    page, live_server, demo_board, operator, login, axe
):
    login(page, live_server, operator.username)
    page.get_by_role("link", name="Workers").click()
    page.wait_for_url(re.compile(r"/workers/$"))
    assert page.locator("table.pool-table tbody tr").count() >= 6
    assert axe(page) == []
    page.evaluate("window.__noReload = 1")
    page.get_by_role("button", name="Pause worker @qa-1").click()
    page.get_by_role("button", name="Resume worker @qa-1").wait_for()
    assert "Worker @qa-1 paused." in page.locator("#messages").inner_text()
    assert page.evaluate("window.__noReload") == 1
    page.get_by_role("link", name="Heartbeat").click()
    page.wait_for_url(re.compile(r"sort=-?heartbeat"))
    assert page.locator("th[aria-sort=ascending], th[aria-sort=descending]").count() == 1


def test_history_page_filters_by_lane(page, live_server, demo_board, viewer, login, axe):
    login(page, live_server, viewer.username)
    page.get_by_role("link", name="History").click()
    page.get_by_label("Lane").select_option("security")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"lane=security"))
    lanes = set(page.locator(".history-table tbody .lane").all_inner_texts())
    assert lanes == {"Security"}
    assert axe(page) == []


def test_keyboard_opens_a_task_and_phone_layout_fits(
    browser, live_server, demo_board, viewer, artifacts, login
):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        login(page, live_server, viewer.username)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1
        page.screenshot(path=str(artifacts / "board-phone.png"), full_page=False)
        running = demo_board["running"]
        page.locator(f"#card-link-{running}").focus()
        page.keyboard.press("Enter")
        page.locator("#task-detail").wait_for()
        assert "Add rate limiting to the public API" in page.locator("#task-detail").inner_text()
        page.locator("#task-detail [data-close-detail]").focus()
        page.keyboard.press("Enter")
        page.wait_for_function("!document.querySelector('#task-detail')")
    finally:
        context.close()


def test_without_javascript_links_and_forms_still_work(
    browser, live_server, demo_board, operator, login
):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        login(page, live_server, operator.username)
        dead = demo_board["dead"][2]
        page.locator(f"#card-link-{dead}").click()
        page.wait_for_url(f"{live_server.url}/tasks/{dead}/")
        assert "Speed up the search index rebuild" in page.content()
        page.locator(f"#detail-retry-{dead}").click()
        page.wait_for_url(re.compile(rf"/tasks/{dead}/"))
        assert f"Task #{dead} retried." in page.content()
        page.goto(f"{live_server.url}/?lane=backend")
        page.get_by_role("link", name="Retry all shown…").click()
        assert "This will move" in page.content()
        page.get_by_role("button", name=re.compile(r"Retry \d+ task")).click()
        page.wait_for_url(re.compile(r"lane=backend"))
        assert "Retried" in page.content()
    finally:
        context.close()


def test_readme_screenshot(page, live_server, demo_board, approver, artifacts, login, repo_root):
    """The board screenshot the README shows; refreshed with VIBE_UPDATE_SCREENSHOTS=1."""
    page.set_viewport_size({"width": 1600, "height": 1000})
    login(page, live_server, approver.username)
    page.evaluate("window.vibePaused = true")
    assert page.locator("#cards-completed .card").count() >= 1
    assert page.get_by_role("button", name=f"Approve task {demo_board['approval']}").is_visible()
    shot = artifacts / "board-readme.png"
    page.screenshot(path=str(shot), full_page=False)
    if os.environ.get("VIBE_UPDATE_SCREENSHOTS") == "1":
        target = repo_root / "docs" / "screenshots" / "board.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_a_poll_that_raced_a_click_does_not_undo_it(page, live_server, demo_board, operator, login):
    """A refresh that left before a Retry click and answers after it carries the old board; it
    must not put the retried card back in the dead-letter column."""
    login(page, live_server, operator.username)
    held = []

    def hold_poll(route):
        if route.request.headers.get("hx-target") == "live":
            held.append((route, route.fetch()))  # the board as it is now, before the click
        else:
            route.continue_()

    page.route(re.compile(r"/(\?.*)?$"), hold_poll)
    page.evaluate("htmx.trigger('#live', 'vibe:refresh')")
    page.wait_for_function("document.querySelector('#live').classList.contains('htmx-request')")
    dead = demo_board["dead"][0]
    page.locator(f"#card-retry-{dead}").click()
    page.locator(f"#cards-pending #card-{dead}").wait_for()
    assert len(held) == 1
    route, stale = held[0]
    route.fulfill(response=stale)
    page.wait_for_function("!document.querySelector('#live').classList.contains('htmx-request')")
    assert page.locator(f"#cards-pending #card-{dead}").count() == 1
    assert page.locator(f"#cards-dead_letter #card-{dead}").count() == 0
