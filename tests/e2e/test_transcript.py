"""The live transcript in a real browser: events the worker appends while the task panel is
open appear without re-rendering what is there (an opened tool call stays open), and the page
with a transcript passes axe-core."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.models import Run, RunEvent

pytestmark = [pytest.mark.e2e]

CONVERSATION = [
    ("system", "session started", {"session_id": "sess-1"}),
    ("message", "I will add a throttle to the API.", {}),
    ("tool_call", "cat api/throttling.py", {"name": "Bash", "id": "toolu_1"}),
    ("tool_result", "class Throttle:\n    rate = 10", {"id": "toolu_1", "is_error": False}),
    ("tool_call", "tests/test_throttle.py", {"name": "Write", "id": "toolu_2"}),
    ("tool_result", "permission denied: tests/", {"id": "toolu_2", "is_error": True}),
    ("error", "the sandbox refused a write outside the worktree", {}),
    ("output", "plain line from the agent", {}),
]


def running_task():
    task = lifecycle.submit(
        "Add rate limiting to the public API", lane="backend", actor="cli", pipeline="none"
    )
    claimed = lifecycle.claim_next("@backend-1")
    assert claimed.pk == task.pk
    run = Run.objects.create(
        task=task, worker_id="@backend-1", attempt=1, agent="claude", kind="claude", role="builder"
    )
    return claimed, run


def append(run: Run, *events: tuple[str, str, dict]) -> None:
    """What the worker's transcript writer does every second or so."""
    last = RunEvent.objects.filter(run=run).order_by("-seq").values_list("seq", flat=True).first()
    start = (last or 0) + 1
    RunEvent.objects.bulk_create(
        RunEvent(run=run, seq=start + i, kind=kind, text=text, data=data)
        for i, (kind, text, data) in enumerate(events)
    )


def test_new_events_appear_live_and_an_open_tool_call_stays_open(
    page, live_server, viewer, login, axe, artifacts
):
    task, run = running_task()
    append(run, *CONVERSATION)
    login(page, live_server, viewer.username)
    # Opened from the board: the panel (and its script) arrives through htmx.
    page.locator(f"#card-link-{task.pk}").click()
    panel = page.locator("#task-detail")
    panel.wait_for()
    call = panel.locator('details[data-tool-id="toolu_1"]')
    call.locator("summary").click()
    assert call.evaluate("el => el.open")
    assert "class Throttle:" in call.inner_text()
    # A mark on the element itself: a re-render would replace the node and lose it.
    call.evaluate("el => { el.vibeMark = 'kept'; }")

    append(
        run,
        ("message", "Now writing the tests in tests/test_throttle.py", {}),
        ("tool_call", "pytest -q tests/test_throttle.py", {"name": "Bash", "id": "toolu_3"}),
    )
    panel.get_by_text("Now writing the tests in tests/test_throttle.py").wait_for()
    later = panel.locator('details[data-tool-id="toolu_3"]')
    later.wait_for()
    assert "No result yet." in later.evaluate("el => el.textContent")

    # The result arrives in a later poll and goes inside its call.
    append(run, ("tool_result", "3 passed in 0.2s", {"id": "toolu_3", "is_error": False}))
    page.wait_for_function(
        """() => {
          const d = document.querySelector('details[data-tool-id="toolu_3"]');
          return d && d.textContent.includes('3 passed in 0.2s')
            && !document.querySelector('li[data-result-for="toolu_3"]');
        }"""
    )
    # Past the panel's own 3-second refresh of its facts: still the same open element.
    page.wait_for_timeout(3500)
    assert call.evaluate("el => el.open && el.vibeMark === 'kept'")
    assert panel.locator(".tx-error").first.is_visible()
    page.screenshot(path=str(artifacts / "transcript-live.png"), full_page=False)

    Run.objects.filter(pk=run.pk).update(
        finished_at=timezone.now(),
        exit_code=0,
        outcome="completed",
        model="claude-sonnet-4",
        input_tokens=1200,
        output_tokens=300,
        cost_usd=Decimal("0.0042"),
        turns=4,
        session_id="sess-42",
    )
    page.wait_for_function(
        "() => document.querySelector('ol[data-transcript]').dataset.running === '0'"
    )
    usage = panel.locator(f"#run-{run.pk} [data-run-usage]")
    usage.get_by_text("$0.0042").wait_for()
    assert "1,200 in" in usage.inner_text() and "sess-42" in usage.inner_text()
    assert "exit 0" in panel.locator(f"#run-{run.pk} [data-run-state]").inner_text()
    assert call.evaluate("el => el.open && el.vibeMark === 'kept'")
    assert axe(page) == []


def test_the_task_page_with_a_transcript_passes_axe(page, live_server, viewer, login, axe):
    task, run = running_task()
    append(run, *CONVERSATION * 3)
    login(page, live_server, viewer.username)
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    page.locator('details[data-tool-id="toolu_2"] > summary').first.click()
    assert axe(page) == []
    # The transcript scrolled to its newest row.
    box = page.locator(".transcript-box")
    assert box.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight < 40")
