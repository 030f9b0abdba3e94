"""The specialists' pipeline, as data (seed: "Extended Worker Roles").

A pipeline is a list of steps; each step is a set of reviewer lanes that review the work side by
side. When every review of a step passes, the next step starts; when the last step passes, the
work is completed. A FAIL sends the work back to its lane as rework, with the findings in its
context, until `VIBE_MAX_REVIEW_ROUNDS` rounds have failed; then a person decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from .choices import Lane, Severity


@dataclass(frozen=True)
class Step:
    lanes: tuple[str, ...]
    stage: str  # "review" for specialist audits, "qa" for QA

    @property
    def label(self) -> str:
        return " + ".join(REVIEW_LABELS.get(lane, lane) for lane in self.lanes)


REVIEW_LABELS: dict[str, str] = {
    Lane.SECURITY: "security audit",
    Lane.UX: "UX/accessibility audit",
    Lane.DATA: "data-quality review",
    Lane.QA: "QA",
}

PIPELINES: dict[str, tuple[Step, ...]] = {
    # backend work → security audit (@security-1) → QA
    "backend": (Step((Lane.SECURITY,), "review"), Step((Lane.QA,), "qa")),
    # frontend work → UX/accessibility audit alongside → QA
    "frontend": (Step((Lane.UX,), "review"), Step((Lane.QA,), "qa")),
    # data-pipeline work → data-quality review → QA
    "data": (Step((Lane.DATA,), "review"), Step((Lane.QA,), "qa")),
    # no reviews: completing the work completes the task
    "none": (),
}

# Which pipeline a task gets when its submitter does not say.
DEFAULT_PIPELINE_BY_LANE: dict[str, str] = {
    Lane.BACKEND: "backend",
    Lane.FRONTEND: "frontend",
}

# A FAIL from this reviewer lane with a finding of this severity blocks the work outright: it
# never reaches QA and a person is told.
BLOCKING_SEVERITY_BY_LANE: dict[str, str] = {Lane.SECURITY: Severity.CRITICAL}

# Lanes whose agents must end their output with a verdict block.
AUDITOR_LANES = frozenset({Lane.SECURITY, Lane.UX, Lane.DATA, Lane.QA})


def pipeline_for(lane: str, requested: str | None) -> str:
    if requested:
        if requested not in PIPELINES:
            names = ", ".join(sorted(PIPELINES))
            raise ValueError(f"unknown pipeline {requested!r}; choose one of {names}")
        return requested
    return DEFAULT_PIPELINE_BY_LANE.get(lane, "none")


# How each pipeline's finished work reaches the team when the task does not say; a pipeline not
# named here uses VIBE_DELIVERY.
DELIVERY_BY_PIPELINE: dict[str, str] = {}
DELIVERIES = ("branch", "merge", "pull_request")


def delivery_for(pipeline: str, requested: str | None) -> str:
    if requested:
        if requested not in DELIVERIES:
            raise ValueError(
                f"unknown delivery {requested!r}; choose one of {', '.join(DELIVERIES)}"
            )
        return requested
    return DELIVERY_BY_PIPELINE.get(pipeline, settings.VIBE_DELIVERY)


def steps(pipeline: str) -> tuple[Step, ...]:
    return PIPELINES.get(pipeline or "none", ())


def max_review_rounds() -> int:
    return settings.VIBE_MAX_REVIEW_ROUNDS


def blocking_findings(review_lane: str, findings: list[dict]) -> list[dict]:
    severity = BLOCKING_SEVERITY_BY_LANE.get(review_lane)
    if not severity:
        return []
    return [f for f in findings if f.get("severity") == severity]
