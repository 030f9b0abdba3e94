"""A task's change in a real browser: the files are collapsible, a link in the summary table
opens its file, and the page with a diff passes axe-core."""

from __future__ import annotations

import pytest

from tests.tasks_app.test_diff_view import task_with_change

pytestmark = [pytest.mark.e2e]


def test_the_diff_files_are_collapsible_and_pass_axe(
    page, live_server, viewer, login, axe, artifacts, tmp_path
):
    task, run, _ = task_with_change(tmp_path, huge=False)
    login(page, live_server, viewer.username)
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    change = page.locator(f"#work-diff-{run.pk}")
    change.wait_for()
    app = change.locator("details.diff-file", has=page.locator("summary code", has_text="app.py"))
    assert app.first.evaluate("el => el.open")  # a small diff starts open
    # The added line is there as text, with its line number and a marker a reader hears.
    row = app.first.locator("tr.diff-add", has_text="alert(1)")
    assert row.locator(".ln").nth(1).inner_text() == "6"
    assert row.locator(".visually-hidden").inner_text() == "added"
    assert page.evaluate("() => window.alertCalled === undefined")
    app.first.locator("summary").click()
    assert not app.first.evaluate("el => el.open")
    assert not row.is_visible()
    app.first.locator("summary").click()
    assert row.is_visible()
    page.screenshot(path=str(artifacts / "task-diff.png"), full_page=True)
    assert axe(page) == []


def test_a_large_diff_starts_closed_and_says_what_is_not_shown(
    page, live_server, viewer, login, axe, tmp_path
):
    task, run, _ = task_with_change(tmp_path)
    login(page, live_server, viewer.username)
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    files = page.locator(f"#work-diff-{run.pk} details.diff-file")
    assert files.count() == 7
    assert all(not files.nth(i).evaluate("el => el.open") for i in range(7))
    huge = files.filter(has=page.locator("summary code", has_text="huge.csv"))
    huge.locator("summary").click()
    assert "Large file: 30,000 lines changed — not shown." in huge.inner_text()
    assert axe(page) == []
