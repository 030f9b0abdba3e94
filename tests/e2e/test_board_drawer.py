"""The board a team lead runs the factory from, in a real browser: the task drawer keeps the
columns that need a person in view, a keyboard alone opens, reads and closes a task and submits
one, filters behave (selects on change, Back, Clear), the refresh interval and the theme are
remembered, cancel asks in words, and axe finds nothing serious in light and dark, on a desktop
and on a phone."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.e2e]

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def new_page(browser, viewport=DESKTOP, scheme="light", **options):
    context = browser.new_context(viewport=viewport, color_scheme=scheme, **options)
    context.set_default_timeout(10_000)
    return context, context.new_page()


def box(page, selector: str) -> dict:
    return page.locator(selector).bounding_box()


def test_the_drawer_keeps_the_columns_that_need_a_person_in_view_at_1280(
    browser, live_server, demo_board, operator, artifacts, login, axe
):
    context, page = new_page(browser)
    try:
        login(page, live_server, operator.username)
        page.evaluate("window.vibePaused = true")
        running = demo_board["running"]
        page.locator(f"#card-link-{running}").click()
        page.locator("#task-detail").wait_for()
        assert re.search(rf"[?&]task={running}\b", page.url)
        drawer = box(page, "#detail")
        assert drawer["x"] + drawer["width"] == pytest.approx(1280, abs=1)
        for column in ("awaiting_approval", "blocked", "dead_letter"):
            col = box(page, f"#cards-{column}")
            assert col["x"] >= 0 and col["x"] + col["width"] <= drawer["x"], column
        # A card in a visible column can be used with the drawer open.
        dead = demo_board["dead"][0]
        assert page.locator(f"#card-retry-{dead}").is_visible()
        page.screenshot(path=str(artifacts / "drawer-1280.png"))
        assert axe(page) == []
    finally:
        context.close()


def test_keyboard_only_open_read_and_close_a_task(browser, live_server, demo_board, viewer, login):
    context, page = new_page(browser)
    try:
        login(page, live_server, viewer.username)
        page.evaluate("window.vibePaused = true")
        blocked = demo_board["blocked"]
        link = page.locator(f"#card-link-{blocked}")
        link.focus()
        page.keyboard.press("Enter")
        page.locator("#task-detail").wait_for()
        # Focus moved into the drawer: its heading, so the next Tab reaches its buttons.
        assert page.evaluate("document.activeElement.id") == "detail-title"
        assert "Impersonation is not audited" in page.locator("#task-detail").inner_text()
        page.keyboard.press("Tab")
        assert page.evaluate("!!document.activeElement.closest('#detail')")
        page.keyboard.press("Escape")
        page.wait_for_function("!document.querySelector('#task-detail')")
        assert page.evaluate("document.activeElement.id") == f"card-link-{blocked}"
        assert "task=" not in page.url
        # A shared link opens the drawer with focus in it; Escape closes it there too.
        page.goto(f"{live_server.url}/?task={blocked}")
        assert page.evaluate("document.activeElement.id") == "detail-title"
        page.keyboard.press("Escape")
        page.wait_for_function("!document.querySelector('#task-detail')")
        assert page.evaluate("document.activeElement.id") == f"card-link-{blocked}"
    finally:
        context.close()


def test_keyboard_only_submit_a_task(browser, live_server, demo_board, operator, login):
    context, page = new_page(browser)
    try:
        login(page, live_server, operator.username)
        summary = page.locator(".submit-panel > summary")
        summary.focus()
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "n-goal"
        page.keyboard.type("Add a keyboard shortcut list to the help page")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "n-lane"
        page.keyboard.press("Tab")
        page.keyboard.press("Control+A")
        page.keyboard.type("70")
        for _ in range(3):
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Submit"
        page.keyboard.press("Enter")
        page.locator("#cards-pending .card", has_text="keyboard shortcut list").wait_for()
        assert "submitted" in page.locator("#messages").inner_text()
    finally:
        context.close()


def test_cancel_asks_in_page_with_keep_and_cancel_task(
    browser, live_server, demo_board, operator, login
):
    context, page = new_page(browser)
    try:
        login(page, live_server, operator.username)
        page.evaluate("window.vibePaused = true")
        approval = demo_board["approval"]
        page.locator(f"#card-cancel-{approval}").click()
        dialog = page.locator("#confirm-dialog")
        dialog.wait_for()
        assert "Cancel task #" in dialog.inner_text()
        assert page.evaluate("document.activeElement.id") == "confirm-no"  # Keep, the safe one
        assert page.locator("#confirm-no").inner_text() == "Keep"
        assert page.locator("#confirm-yes").inner_text() == "Cancel task"
        page.keyboard.press("Escape")
        page.wait_for_function("!document.querySelector('#confirm-dialog').open")
        assert page.locator(f"#card-{approval}").count() == 1
        assert page.evaluate("document.activeElement.id") == f"card-cancel-{approval}"
        page.locator(f"#card-cancel-{approval}").click()
        page.locator("#confirm-yes").click()
        page.wait_for_function(f"!document.querySelector('#card-{approval}')")
        assert f"Task #{approval} cancelled." in page.locator("#messages").inner_text()
        # The column it left says so again.
        empty = page.locator("#cards-awaiting_approval .empty")
        if page.locator("#cards-awaiting_approval .card").count() == 0:
            assert empty.is_visible()
    finally:
        context.close()


def test_a_column_emptied_in_place_says_nothing_here(
    browser, live_server, demo_board, operator, login
):
    from tasks_app import lifecycle
    from tasks_app.choices import Status
    from tasks_app.models import Task

    # One card left in Dead letter, so retrying it empties the column without a reload.
    for pk in demo_board["dead"][1:]:
        lifecycle.retry(pk, actor="cli")
    dead = demo_board["dead"][0]
    assert Task.objects.filter(status=Status.DEAD_LETTER).count() == 1
    context, page = new_page(browser)
    try:
        login(page, live_server, operator.username)
        page.evaluate("window.vibePaused = true")
        assert not page.locator("#cards-dead_letter .empty").is_visible()
        page.locator(f"#card-retry-{dead}").click()
        page.locator(f"#cards-pending #card-{dead}").wait_for()
        assert page.locator("#cards-dead_letter .empty").is_visible()
        assert page.locator("#cards-dead_letter .empty").inner_text() == "Nothing here."
    finally:
        context.close()


def test_filters_selects_apply_on_change_not_per_arrow_key_and_follow_back(
    browser, live_server, demo_board, viewer, login
):
    context, page = new_page(browser)
    try:
        filtered: list[str] = []
        page.on(
            "request",
            lambda r: filtered.append(r.url) if r.headers.get("hx-trigger") == "filters" else None,
        )
        login(page, live_server, viewer.username)
        page.evaluate("window.vibePaused = true")
        assert page.locator("#filter-clear a").count() == 0
        lane = page.locator("#f-lane")
        lane.focus()
        for _ in range(3):
            page.keyboard.press("ArrowDown")
        page.wait_for_timeout(400)
        assert filtered == []  # walking through the options asks nothing
        page.keyboard.press("Tab")  # leaving the select applies what it shows
        page.wait_for_url(re.compile(r"lane=qa"))
        assert len(filtered) == 1
        # The Clear link appears without a reload.
        page.locator("#filter-clear a", has_text="Clear").wait_for()
        # A mouse (or a phone's picker) choice applies at once.
        page.locator("#f-lane").select_option("frontend")
        page.wait_for_url(re.compile(r"lane=frontend"))
        page.wait_for_function(
            "[...document.querySelectorAll('#board .card .lane')]"
            ".every(e => e.textContent === 'Frontend')"
        )
        assert len(filtered) == 2
        # Back: the board and the form say qa again; once more: no filter at all.
        page.go_back()
        page.wait_for_url(re.compile(r"lane=qa"))
        page.wait_for_function("document.querySelector('#f-lane').value === 'qa'")
        page.go_back()
        page.wait_for_function("document.querySelector('#f-lane').value === ''")
        assert "lane=" not in page.url
        # The search box: a qualifier on Enter.
        page.locator("#f-q").fill("status:dead_letter")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"q=status%3Adead_letter"))
        page.locator(".updated", has_text="status dead_letter").wait_for()
        page.wait_for_function("document.querySelectorAll('#cards-pending .card').length === 0")
        assert page.locator("#cards-dead_letter .card").count() == 3
        assert "status dead_letter" in page.locator("#metrics").inner_text()
    finally:
        context.close()


def test_refresh_interval_and_theme_are_remembered_per_browser(
    browser, live_server, demo_board, viewer, login
):
    context, page = new_page(browser)
    try:
        login(page, live_server, viewer.username)
        interval = page.get_by_label("Auto-refresh")
        assert [o.strip() for o in interval.locator("option").all_inner_texts()] == [
            "Off",
            "every 5 s",
            "every 10 s",
            "every 30 s",
        ]
        interval.select_option("30")
        toggle = page.get_by_role("button", name="Dark theme")
        assert toggle.get_attribute("aria-pressed") == "false"
        toggle.click()
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        page.reload()
        assert page.get_by_label("Auto-refresh").input_value() == "30"
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        assert page.get_by_role("button", name="Dark theme").get_attribute("aria-pressed") == "true"
        # At 30 s the board's 5-second tick asks nothing for a while.
        polls: list[str] = []
        page.on(
            "request",
            lambda r: polls.append(r.url) if r.headers.get("hx-target") == "live" else None,
        )
        page.wait_for_timeout(11_000)
        assert polls == []
    finally:
        context.close()


def test_the_system_dark_theme_is_followed_until_one_is_chosen(
    browser, live_server, demo_board, viewer, artifacts, login
):
    context, page = new_page(browser, scheme="dark")
    try:
        login(page, live_server, viewer.username)
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background != "rgb(244, 245, 247)"
        page.screenshot(path=str(artifacts / "board-dark.png"))
    finally:
        context.close()


def test_phone_layout_puts_what_needs_a_person_first_with_filters_folded(
    browser, live_server, demo_board, operator, artifacts, login
):
    context, page = new_page(browser, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        login(page, live_server, operator.username)
        page.evaluate("window.vibePaused = true")
        assert not page.locator("#f-lane").is_visible()
        toggle = page.get_by_role("button", name=re.compile("^Filters"))
        assert toggle.get_attribute("aria-expanded") == "false"
        first = page.locator("#board .column").first
        assert first.locator(".column-title").inner_text().startswith("Awaiting approval")
        # The first card needing a person is on the first screen.
        card = box(page, "#cards-awaiting_approval .card >> nth=0")
        assert card["y"] < PHONE["height"]
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1
        page.screenshot(path=str(artifacts / "board-phone-first-screen.png"))
        toggle.click()
        assert page.locator("#f-lane").is_visible()
        # The drawer covers the phone's screen and closes with its button.
        page.locator(f"#card-link-{demo_board['approval']}").click()
        page.locator("#task-detail").wait_for()
        assert box(page, "#detail")["width"] == pytest.approx(PHONE["width"], abs=1)
        page.screenshot(path=str(artifacts / "drawer-phone.png"))
        page.locator("[data-close-detail]").click()
        page.wait_for_function("!document.querySelector('#task-detail')")
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_axe_finds_nothing_serious_on_the_board_drawer_form_and_metrics(
    browser, live_server, demo_board, approver, artifacts, login, axe, scheme, size
):
    viewport = DESKTOP if size == "desktop" else PHONE
    context, page = new_page(browser, viewport=viewport, scheme=scheme, is_mobile=size == "phone")
    try:
        login(page, live_server, approver.username)
        page.evaluate("window.vibePaused = true")
        page.locator("#throughput svg").first.wait_for()
        assert axe(page) == [], "board"
        page.screenshot(path=str(artifacts / f"axe-board-{size}-{scheme}.png"), full_page=True)
        blocked = page.locator(f"#card-{demo_board['blocked']}")
        assert "stage-failed" in blocked.inner_html()  # the strip shows the security FAIL
        blocked.screenshot(path=str(artifacts / f"card-strip-{size}-{scheme}.png"))

        page.locator(".submit-panel > summary").click()
        page.locator("#n-goal").wait_for()
        assert axe(page) == [], "new-task form"

        page.locator(f"#card-link-{demo_board['blocked']}").click()
        page.locator("#task-detail").wait_for()
        assert axe(page) == [], "board with an open task"
        page.screenshot(path=str(artifacts / f"axe-drawer-{size}-{scheme}.png"))

        page.goto(f"{live_server.url}/metrics/")
        assert axe(page) == [], "/metrics/"
        page.goto(f"{live_server.url}/tasks/new/")
        assert axe(page) == [], "/tasks/new/"
    finally:
        context.close()
