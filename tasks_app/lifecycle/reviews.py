"""The pipeline's reviews: spawning a step's reviews, and what the work does once they are in."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from .. import actors, pipeline
from ..choices import Risk, Status
from ..models import Task, TaskHistory
from .delivery import delivery_step
from .intake import MAX_GOAL_LENGTH
from .moves import load, move, wake_workers


def _sentence_case(label: str) -> str:
    """'security audit' → 'Security audit', but 'QA' stays 'QA' (str.capitalize would not)."""
    return label[:1].upper() + label[1:]


def spawn_reviews(task: Task, step_index: int) -> None:
    step = pipeline.steps(task.pipeline)[step_index]
    for lane in step.lanes:
        review = Task.objects.create(
            goal=f"{_sentence_case(pipeline.REVIEW_LABELS.get(lane, lane))} of task #{task.pk}: "
            f"{task.goal}"[:MAX_GOAL_LENGTH],
            lane=lane,
            priority=min(100, task.priority + 1),
            risk=Risk.LOW,
            status=Status.PENDING,
            parent=task,
            stage=step.stage,
            pipeline="none",
            pipeline_step=step_index,
            review_round=task.review_round,
            max_attempts=task.max_attempts,
            branch=task.branch,
            head_commit=task.head_commit,
        )
        TaskHistory.objects.create(
            task=review,
            from_status="",
            to_status=Status.PENDING,
            actor=actors.SYSTEM,
            event="spawned",
            note=f"spawned by the pipeline for task #{task.pk} (round {task.review_round + 1})",
        )
        wake_workers(lane)


def after_review(parent_id: int, *, actor: str) -> None:
    """Decide the reviewed work's next status once every review of its current step is in."""
    parent = load(parent_id)
    if parent.status != Status.REVIEW_NEEDED:
        return  # cancelled or moved by a person meanwhile: the review result is kept, no move
    reviews = list(
        parent.children.filter(
            review_round=parent.review_round, pipeline_step=parent.pipeline_step
        ).exclude(status=Status.CANCELLED)
    )
    if any(r.status != Status.COMPLETED for r in reviews):
        return
    failed = [r for r in reviews if r.verdict == "FAIL"]
    steps = pipeline.steps(parent.pipeline)
    if not failed:
        next_step = parent.pipeline_step + 1
        if next_step < len(steps):
            changed = Task.objects.filter(pk=parent.pk, status=Status.REVIEW_NEEDED).update(
                pipeline_step=next_step, updated_at=timezone.now()
            )
            if changed:
                parent.pipeline_step = next_step
                TaskHistory.objects.create(
                    task=parent,
                    from_status=Status.REVIEW_NEEDED,
                    to_status=Status.REVIEW_NEEDED,
                    actor=actor,
                    event="step_passed",
                    note=f"{steps[next_step - 1].label} passed; {steps[next_step].label} next",
                )
                spawn_reviews(parent, next_step)
            return
        delivery, note, notify = delivery_step(parent, passed="all reviews passed")
        move(parent, Status.REVIEW_NEEDED, actor=actor, note=note, notify=notify, **delivery)
        return

    findings = []
    for review in failed:
        for finding in review.findings:
            findings.append({**finding, "review_task": review.pk, "reviewer_lane": review.lane})
    labels = ", ".join(f"#{r.pk} ({pipeline.REVIEW_LABELS.get(r.lane, r.lane)})" for r in failed)
    # review_round identifies a round (its reviews carry it); round_base is where the count
    # restarted when a person last retried, so a retried task gets its full rounds again.
    round_base = int((parent.context or {}).get("round_base", 0))
    context = {
        "findings": findings,
        "failed_reviews": [r.pk for r in failed],
        "summaries": [r.result.get("summary", "") for r in failed if r.result],
        "round_base": round_base,
    }
    blockers = [f for r in failed for f in pipeline.blocking_findings(r.lane, r.findings)]
    rounds_used = parent.review_round + 1 - round_base
    if blockers:
        titles = "; ".join(f["title"] for f in blockers)
        note = f"blocked: {blockers[0]['severity']} finding in {labels}: {titles}"
        outcome: dict[str, Any] = {"status": Status.BLOCKED}
        outcome["last_error_type"] = "review_blocked"
        outcome["last_error"] = titles
    elif rounds_used >= pipeline.max_review_rounds():
        note = f"blocked: review failed {rounds_used} rounds (last: {labels}); a person decides"
        outcome = {"status": Status.BLOCKED, "last_error_type": "review_failed"}
        outcome["last_error"] = f"review failed {rounds_used} rounds"
    else:
        note = f"rework: {labels} failed with {len(findings)} finding(s)"
        outcome = {"status": Status.PENDING, "pipeline_step": 0, "worker_id": None}
        outcome["review_round"] = parent.review_round + 1
    move(parent, Status.REVIEW_NEEDED, actor=actor, note=note, context=context, **outcome)


def review_cancelled(parent: Task, review: Task, *, actor: str) -> None:
    """A cancelled review can never pass, so the work it was reviewing waits for a person."""
    if parent.status != Status.REVIEW_NEEDED:
        return
    if (review.review_round, review.pipeline_step) != (parent.review_round, parent.pipeline_step):
        return  # a review of an earlier round or step: it no longer decides anything
    label = pipeline.REVIEW_LABELS.get(review.lane, review.lane)
    move(
        parent,
        Status.REVIEW_NEEDED,
        actor=actor,
        event="review_cancelled",
        note=f"blocked: its {label} #{review.pk} was cancelled; retry it to rework, or cancel it",
        status=Status.BLOCKED,
        last_error_type="review_cancelled",
        last_error=f"{label} #{review.pk} was cancelled",
    )
