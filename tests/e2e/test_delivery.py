"""Delivery in a real browser: the task page of work awaiting merge shows its Delivery section
and passes axe-core, and "Request changes" sends the work back in place; the board shows the
delivery badge, filters by delivery state and submits new work with a delivery."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

pytestmark = [pytest.mark.e2e]


def awaiting_merge(goal: str = "Add a /health endpoint that reports the database"):
    """Work that passed every review and waits for an approver to merge it."""
    from tasks_app import lifecycle
    from tasks_app.choices import Status
    from tasks_app.models import Task

    task = lifecycle.submit(goal, lane="backend", actor="cli", pipeline="none", delivery="merge")
    Task.objects.filter(pk=task.pk).update(
        status=Status.REVIEW_NEEDED,
        delivery_state="awaiting_merge",
        branch=f"vibe/f3a9/task-{task.pk}-add-a-health-endpoint",
        base_branch="main",
        head_commit="4f1c2a9e8b7d6c5f4e3d2c1b0a998877",
        updated_at=timezone.now(),
    )
    return Task.objects.get(pk=task.pk)


def test_task_page_awaiting_merge_shows_delivery_and_requests_changes(
    page, live_server, approver, login, axe, artifacts
):
    task = awaiting_merge()
    login(page, live_server, approver.username)
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    section = page.locator(f"#delivery-{task.pk}")
    section.wait_for()
    assert section.get_by_role("heading", name="Delivery").is_visible()
    text = section.inner_text()
    assert "awaiting merge into main" in text
    assert task.branch in text
    assert page.locator(f"#detail-merge-{task.pk}").is_visible()
    assert page.locator(f"#detail-rebase-{task.pk}").count() == 0
    comment = section.get_by_label("What should change?")
    assert comment.is_visible()
    page.screenshot(path=str(artifacts / "task-delivery.png"), full_page=True)
    assert axe(page) == []

    page.evaluate("window.__noReload = 'still here'")
    comment.fill("Report the queue depth too, and return 503 while the database is down.")
    page.get_by_role("button", name="Request changes").click()
    page.locator("#messages .message-success").wait_for()
    assert f"Task #{task.pk} sent back for changes." in page.locator("#messages").inner_text()
    assert page.evaluate("window.__noReload") == "still here"  # swapped in place
    detail = page.locator("#task-detail")
    assert "Pending" in detail.locator(".detail-head .status").inner_text()
    assert "Report the queue depth too" in detail.inner_text()  # under "Findings to rework"
    assert page.locator(f"#detail-merge-{task.pk}").count() == 0
    page.screenshot(path=str(artifacts / "task-delivery-reworked.png"), full_page=True)
    assert axe(page) == []

    task.refresh_from_db()
    assert task.status == "pending" and task.delivery_state == ""


def test_board_badge_filter_and_submit_with_a_delivery(
    page, live_server, superuser, login, axe, artifacts
):
    from tasks_app import lifecycle
    from tasks_app.models import Task

    waiting = awaiting_merge()
    conflicted = awaiting_merge("Rename the cart's total field")
    Task.objects.filter(pk=conflicted.pk).update(
        delivery_state="conflict", conflicts=["shop/cart.py", "shop/api.py"]
    )
    plain = lifecycle.submit("Write the changelog", lane="qa", actor="cli")
    login(page, live_server, superuser.username)
    badge = page.locator(f"#card-{conflicted.pk} .delivery-badge")
    assert badge.text_content() == "Delivery: ⚠ conflicts with main in 2 files"
    assert "delivery-conflict" in badge.get_attribute("class")

    page.locator("#f-delivery").select_option("conflict")
    page.wait_for_url(re.compile(r"[?&]delivery=conflict\b"))  # a link to the filtered board
    page.locator(f"#card-{waiting.pk}").wait_for(state="detached")
    assert page.locator(f"#card-{conflicted.pk}").is_visible()
    assert page.locator(f"#card-{plain.pk}").count() == 0
    page.screenshot(path=str(artifacts / "board-delivery-filter.png"), full_page=False)
    assert axe(page) == []

    page.get_by_text("New task").click()
    page.get_by_label("Goal", exact=True).fill("Ship the dark mode toggle")
    page.locator("#n-lane").select_option("frontend")
    page.locator("#n-delivery").select_option("pull_request")
    page.locator("#f-delivery").select_option("")  # show every card again
    page.locator(f"#card-{waiting.pk}").wait_for()
    page.get_by_role("button", name="Submit", exact=True).click()
    page.locator("#messages .message-success").wait_for()
    created = Task.objects.get(goal="Ship the dark mode toggle")
    assert created.delivery == "pull_request"
    page.locator(f"#cards-pending #card-{created.pk}").wait_for()  # the board refreshed
    assert page.get_by_label("Goal", exact=True).input_value() == ""
    page.screenshot(path=str(artifacts / "board-submitted.png"), full_page=False)
    assert axe(page) == []


def test_a_conflict_in_the_boards_task_panel_lists_the_files_and_offers_a_rebase(
    page, live_server, operator, login, axe, artifacts
):
    from tasks_app.models import Task

    task = awaiting_merge("Rename the cart's total field")
    Task.objects.filter(pk=task.pk).update(
        delivery_state="conflict", conflicts=["shop/cart.py", "shop/tests/test_cart.py"]
    )
    login(page, live_server, operator.username)
    page.locator(f"#card-link-{task.pk}").click()
    section = page.locator(f"#detail #delivery-{task.pk}")
    section.wait_for()
    assert "conflicts with main in 2 files" in section.inner_text()
    files = section.get_by_role("list", name="Conflicting files with main")
    assert files.get_by_role("listitem").all_inner_texts() == [
        "shop/cart.py",
        "shop/tests/test_cart.py",
    ]
    assert page.locator(f"#detail-rebase-{task.pk}").is_visible()
    assert page.locator(f"#detail-merge-{task.pk}").count() == 0  # an Operator does not merge
    page.screenshot(path=str(artifacts / "board-delivery-conflict.png"), full_page=False)
    assert axe(page) == []
