"""The prompt: the role's SOP, the goal, and the context a colleague would hand over."""

from __future__ import annotations

import pytest

from tasks_app import lifecycle
from tasks_app.models import Task
from workers_app.models import Worker
from workers_app.prompting import render_prompt

pytestmark = pytest.mark.django_db

FAIL_VERDICT = {
    "verdict": "FAIL",
    "score": 40,
    "findings": [
        {"severity": "HIGH", "title": "SQL built by hand", "detail": "Use params.", "file": "a.py"}
    ],
    "summary": "One HIGH finding.",
}


def worker(worker_id: str, lane: str) -> str:
    Worker.objects.create(worker_id=worker_id, lane=lane, capacity_limit=5)
    return worker_id


def run_once(worker_id: str, **result) -> Task:
    task = lifecycle.claim_next(worker_id)
    lifecycle.complete(task.pk, worker_id=worker_id, token=task.claim_token, result=result)
    return task


def test_builder_prompt_has_sop_then_goal():
    task = lifecycle.submit("Add a /health endpoint", lane="backend", actor="cli")
    prompt = render_prompt(task)
    assert prompt.splitlines()[0] == (
        f"Vibe Factory task #{task.pk} (backend lane): Add a /health endpoint"
    )
    assert "# Backend Builder SOP" in prompt
    assert prompt.index("Backend Builder SOP") < prompt.index("## Your task")
    assert "## Context" not in prompt


def test_review_prompt_carries_the_parent_goal_and_summary():
    builder = worker("@b", "backend")
    worker("@s", "security")
    parent = lifecycle.submit("Add a /health endpoint", lane="backend", actor="cli")
    run_once(builder, summary="Added views.health and a test.")
    review = Task.objects.get(parent=parent)
    prompt = render_prompt(review)
    assert "# Security Auditor SOP" in prompt
    assert f"The work under review: task #{parent.pk}" in prompt
    assert "Added views.health and a test." in prompt
    assert "fenced json verdict block" in prompt


def test_rework_prompt_lists_the_failed_reviews_findings():
    builder = worker("@b", "backend")
    auditor = worker("@s", "security")
    parent = lifecycle.submit("Add a search API", lane="backend", actor="cli")
    run_once(builder, summary="done")
    run_once(auditor, **FAIL_VERDICT)
    parent.refresh_from_db()
    assert parent.status == "pending"
    prompt = render_prompt(parent)
    assert "### Rework (round 1)" in prompt
    assert "1. [HIGH] SQL built by hand (a.py) [from security review]" in prompt
    assert "Use params." in prompt


def test_retry_prompt_says_why_the_previous_attempt_failed():
    builder = worker("@b", "backend")
    task = lifecycle.submit("Flaky thing", lane="backend", actor="cli")
    claimed = lifecycle.claim_next(builder)
    lifecycle.fail(
        task.pk,
        worker_id=builder,
        token=claimed.claim_token,
        error_type="agent_exit",
        error="ImportError: no module named foo",
    )
    task.refresh_from_db()
    prompt = render_prompt(task)
    assert "The previous attempt failed (agent_exit), attempt 1 of 3" in prompt
    assert "ImportError: no module named foo" in prompt
