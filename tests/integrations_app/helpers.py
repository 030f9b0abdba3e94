"""Work in the states the GitHub door meets, made through the lifecycle like real work."""

from __future__ import annotations

from integrations_app.sync import Syncer
from tasks_app import lifecycle
from tasks_app.choices import DeliveryState, Status
from tasks_app.models import Task
from workers_app.models import Worker

SECURITY_VERDICT = {
    "verdict": "PASS",
    "score": 88,
    "findings": [
        {
            "severity": "LOW",
            "title": "Consider rate limiting the export endpoint",
            "detail": "Not exploitable today.",
            "file": "app/export.py",
        }
    ],
    "summary": "No injection paths found.",
}
QA_VERDICT = {"verdict": "PASS", "score": 95, "findings": [], "summary": "Tests pass."}


def _run(task_id: int, worker_id: str, result: dict) -> None:
    claimed = lifecycle.claim_next(Worker.objects.get(pk=worker_id))
    assert claimed is not None and claimed.pk == task_id, claimed
    lifecycle.complete(claimed.pk, worker_id=worker_id, token=claimed.claim_token, result=result)


def ready_for_pull_request(
    goal: str = "Add CSV export\n\nUsers want their data as CSV.",
    *,
    branch: str = "vibe/t1-add-csv-export",
    github_issue: str = "",
    reviewed: bool = True,
) -> Task:
    """Work whose reviews passed, waiting for its pull request (delivery_state opening_pr)."""
    task = lifecycle.submit(
        goal,
        lane="backend",
        actor="cli",
        pipeline="backend" if reviewed else "none",
        delivery="pull_request",
        github_issue=github_issue,
    )
    _run(
        task.pk,
        "@backend-1",
        {"summary": "Added /export.csv with tests.", "branch": branch, "base_branch": "main"},
    )
    if reviewed:
        security = Task.objects.get(parent=task, lane="security")
        _run(security.pk, "@security-1", SECURITY_VERDICT)
        qa = Task.objects.get(parent=task, lane="qa")
        _run(qa.pk, "@qa-1", QA_VERDICT)
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, DeliveryState.OPENING_PR)
    return task


def awaiting_merge(**kwargs) -> Task:
    """Work whose pull request the factory opened on the stand-in."""
    task = ready_for_pull_request(**kwargs)
    assert Syncer().open_pull_requests() == 1
    task.refresh_from_db()
    assert task.delivery_state == DeliveryState.AWAITING_MERGE
    return task


def snapshot() -> dict:
    """Everything a webhook could change, to prove one changed nothing."""
    from integrations_app.models import GitHubEvent, IssueComment
    from tasks_app.models import TaskHistory

    return {
        "tasks": list(Task.objects.order_by("pk").values()),
        "history": TaskHistory.objects.count(),
        "events": GitHubEvent.objects.count(),
        "comments": IssueComment.objects.count(),
    }
