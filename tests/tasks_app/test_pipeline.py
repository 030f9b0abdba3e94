"""The specialists' pipeline: audits, QA, rework with findings, and blocking."""

from __future__ import annotations

import pytest

from chatops_app.models import Notification, Platform
from tasks_app import lifecycle, pipeline
from tasks_app.choices import Lane, Status
from tasks_app.lifecycle import InvalidInput
from tasks_app.models import Task, TaskHistory

pytestmark = pytest.mark.django_db

PASS = {"verdict": "PASS", "score": 95, "findings": [], "summary": "looks fine"}
UX_PASS = {"verdict": "PASS", "score": 88, "findings": []}
HIGH_FAIL = {
    "verdict": "FAIL",
    "findings": [{"severity": "HIGH", "title": "Secrets in logs", "file": "app/log.py"}],
    "summary": "fix the logging",
}
CRITICAL_FAIL = {
    "verdict": "FAIL",
    "findings": [
        {"severity": "CRITICAL", "title": "SQL injection in login"},
        {"severity": "LOW", "title": "Typo"},
    ],
}
WORKERS = {
    Lane.BACKEND: "@backend-1",
    Lane.FRONTEND: "@frontend-1",
    Lane.QA: "@qa-1",
    Lane.SECURITY: "@security-1",
    Lane.UX: "@ux-designer",
    Lane.DATA: "@data-analyst",
}


def work(lane: str, result: dict | None = None) -> Task:
    """The lane's worker claims its next task and completes it with `result`."""
    worker_id = WORKERS[lane]
    task = lifecycle.claim_next(worker_id)
    assert task is not None, f"nothing for {worker_id}"
    lifecycle.complete(task.pk, worker_id=worker_id, token=task.claim_token, result=result)
    task.refresh_from_db()
    return task


def open_children(parent: Task) -> list[Task]:
    return list(parent.children.filter(status=Status.PENDING).order_by("pk"))


def reload(task: Task) -> Task:
    task.refresh_from_db()
    return task


def notes(task: Task) -> list[str]:
    return list(TaskHistory.objects.filter(task=task).order_by("id").values_list("note", flat=True))


def test_backend_goes_through_security_then_qa_then_completes():
    parent = lifecycle.submit("add login", lane="backend", priority=60, actor="cli")
    work(Lane.BACKEND, {"summary": "login added"})
    parent = reload(parent)
    assert parent.status == Status.REVIEW_NEEDED
    [audit] = open_children(parent)
    assert (audit.lane, audit.stage, audit.priority, audit.parent_id) == (
        "security",
        "review",
        61,
        parent.pk,
    )
    assert audit.history.get().actor == "system"
    assert lifecycle.claim_next("@qa-1") is None  # QA waits for the audit

    assert work(Lane.SECURITY, PASS).status == Status.COMPLETED
    parent = reload(parent)
    assert (parent.status, parent.pipeline_step) == (Status.REVIEW_NEEDED, 1)
    [qa] = open_children(parent)
    assert (qa.lane, qa.stage) == ("qa", "qa")

    done = work(Lane.QA, PASS)
    assert (done.verdict, done.score, done.result["summary"]) == ("PASS", 95, "looks fine")
    parent = reload(parent)
    assert parent.status == Status.COMPLETED
    assert parent.finished_at is not None
    assert notes(parent) == [
        "submitted",
        "claimed by @backend-1",
        "work done; security audit next",
        "security audit passed; QA next",
        "all reviews passed",
    ]
    assert TaskHistory.objects.filter(task=parent).last().actor == "worker:@qa-1"


def test_a_critical_security_finding_blocks_and_never_reaches_qa():
    parent = lifecycle.submit("add login", lane="backend", actor="cli")
    work(Lane.BACKEND)
    work(Lane.SECURITY, CRITICAL_FAIL)
    parent = reload(parent)
    assert parent.status == Status.BLOCKED
    assert parent.last_error_type == "review_blocked"
    assert "SQL injection in login" in parent.last_error
    assert "CRITICAL finding" in notes(parent)[-1]
    assert not parent.children.filter(lane=Lane.QA).exists()
    assert lifecycle.claim_next("@qa-1") is None
    events = Notification.objects.filter(task=parent).values_list("event", "channel")
    assert sorted(events) == sorted(("blocked", p) for p in Platform.values)
    findings = parent.context["findings"]
    assert {f["title"] for f in findings} == {"SQL injection in login", "Typo"}


def test_a_failed_review_sends_the_work_back_with_findings_then_blocks_after_the_rounds():
    assert pipeline.max_review_rounds() == 2
    parent = lifecycle.submit("add login", lane="backend", actor="cli")
    work(Lane.BACKEND)
    audit = work(Lane.SECURITY, HIGH_FAIL)
    parent = reload(parent)
    assert parent.status == Status.PENDING
    assert parent.worker_id is None
    assert parent.review_round == 1
    [finding] = parent.context["findings"]
    assert finding["title"] == "Secrets in logs"
    assert (finding["severity"], finding["review_task"], finding["reviewer_lane"]) == (
        "HIGH",
        audit.pk,
        "security",
    )
    assert parent.context["failed_reviews"] == [audit.pk]
    assert parent.context["summaries"] == ["fix the logging"]
    assert notes(parent)[-1].startswith(f"rework: #{audit.pk} (security audit) failed")

    # Round two: the rework is claimed by its lane again and audited again.
    work(Lane.BACKEND)
    [second] = open_children(reload(parent))
    assert second.review_round == 1
    work(Lane.SECURITY, HIGH_FAIL)
    parent = reload(parent)
    assert parent.status == Status.BLOCKED
    assert parent.last_error_type == "review_failed"
    assert "review failed 2 rounds" in notes(parent)[-1]
    assert not parent.children.filter(lane=Lane.QA).exists()


def test_one_review_round_blocks_on_the_first_failure(settings):
    settings.VIBE_MAX_REVIEW_ROUNDS = 1
    parent = lifecycle.submit("add login", lane="backend", actor="cli")
    work(Lane.BACKEND)
    work(Lane.SECURITY, HIGH_FAIL)
    assert reload(parent).status == Status.BLOCKED


def test_a_qa_fail_is_rework_too():
    parent = lifecycle.submit("add login", lane="backend", actor="cli")
    work(Lane.BACKEND)
    work(Lane.SECURITY, PASS)
    work(Lane.QA, {"verdict": "FAIL", "findings": [{"severity": "MEDIUM", "title": "500 on /x"}]})
    parent = reload(parent)
    assert (parent.status, parent.review_round, parent.pipeline_step) == ("pending", 1, 0)
    assert parent.context["findings"][0]["reviewer_lane"] == "qa"


def test_a_retried_blocked_task_gets_its_review_rounds_again():
    parent = lifecycle.submit("add login", lane="backend", actor="cli")
    work(Lane.BACKEND)
    work(Lane.SECURITY, CRITICAL_FAIL)
    lifecycle.retry(parent.pk, actor="user:alice")
    work(Lane.BACKEND)
    work(Lane.SECURITY, HIGH_FAIL)
    assert reload(parent).status == Status.PENDING  # rework, not blocked: rounds start afresh
    work(Lane.BACKEND)
    work(Lane.SECURITY, PASS)
    work(Lane.QA, PASS)
    assert reload(parent).status == Status.COMPLETED


def test_frontend_goes_through_the_ux_audit_then_qa():
    parent = lifecycle.submit("new settings page", lane="frontend", actor="cli")
    work(Lane.FRONTEND)
    [audit] = open_children(reload(parent))
    assert (audit.lane, audit.stage) == ("ux", "review")
    done = work(Lane.UX, UX_PASS)
    assert done.score == 88
    [qa] = open_children(reload(parent))
    assert qa.lane == "qa"
    work(Lane.QA, PASS)
    assert reload(parent).status == Status.COMPLETED


def test_a_ux_verdict_without_a_score_is_refused_and_changes_nothing():
    lifecycle.submit("new settings page", lane="frontend", actor="cli")
    work(Lane.FRONTEND)
    audit = lifecycle.claim_next("@ux-designer")
    rows = audit.history.count()
    with pytest.raises(InvalidInput, match='malformed verdict: the UX audit must give a "score"'):
        lifecycle.complete(
            audit.pk, worker_id="@ux-designer", token=audit.claim_token, result={"verdict": "PASS"}
        )
    audit = reload(audit)
    assert audit.status == Status.IN_PROGRESS
    assert audit.history.count() == rows


def test_a_review_without_a_verdict_is_refused():
    lifecycle.submit("add login", lane="backend", actor="cli")
    work(Lane.BACKEND)
    audit = lifecycle.claim_next("@security-1")
    with pytest.raises(InvalidInput, match="malformed verdict"):
        lifecycle.complete(audit.pk, worker_id="@security-1", token=audit.claim_token, result={})
    assert reload(audit).status == Status.IN_PROGRESS


def test_data_pipeline_goes_through_data_review_then_qa():
    parent = lifecycle.submit("nightly import", lane="data", pipeline="data", actor="cli")
    assert parent.pipeline == "data"
    work(Lane.DATA)
    [review] = open_children(reload(parent))
    assert (review.lane, review.stage) == ("data", "review")
    work(Lane.DATA, PASS)
    [qa] = open_children(reload(parent))
    assert qa.lane == "qa"
    work(Lane.QA, PASS)
    assert reload(parent).status == Status.COMPLETED


def test_lanes_without_a_pipeline_complete_directly():
    task = lifecycle.submit("check the release", lane="qa", actor="cli")
    assert task.pipeline == "none"
    assert work(Lane.QA).status == Status.COMPLETED
    assert not task.children.exists()


def test_a_backend_task_can_skip_reviews_when_asked():
    task = lifecycle.submit("bump a version", lane="backend", pipeline="none", actor="cli")
    assert work(Lane.BACKEND).status == Status.COMPLETED
    assert not task.children.exists()


def test_pipeline_rules_as_data():
    assert pipeline.pipeline_for("backend", None) == "backend"
    assert pipeline.pipeline_for("frontend", None) == "frontend"
    assert pipeline.pipeline_for("qa", None) == "none"
    assert pipeline.pipeline_for("qa", "data") == "data"
    with pytest.raises(ValueError, match="unknown pipeline 'x'; choose one of backend, data"):
        pipeline.pipeline_for("qa", "x")
    assert [s.lanes for s in pipeline.steps("backend")] == [("security",), ("qa",)]
    assert pipeline.steps("") == () == pipeline.steps("unknown")
    assert pipeline.steps("frontend")[0].label == "UX/accessibility audit"
    findings = CRITICAL_FAIL["findings"]
    assert pipeline.blocking_findings("security", findings) == [findings[0]]
    assert pipeline.blocking_findings("ux", findings) == []


def test_review_tasks_are_named_for_what_they_check():
    parent = lifecycle.submit("add login", lane="backend", actor="cli")
    work(Lane.BACKEND)
    [audit] = open_children(reload(parent))
    assert audit.goal == f"Security audit of task #{parent.pk}: add login"
    work(Lane.SECURITY, PASS)
    [qa] = open_children(reload(parent))
    assert qa.goal == f"QA of task #{parent.pk}: add login"
