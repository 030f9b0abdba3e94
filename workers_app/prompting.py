"""The prompt an agent receives: a task line, the role's SOP, the goal, then the context.

Context is what a person would hand a colleague: for a review, the work under review (its goal,
summary, branch and diff stat); for a retry, why the previous attempt failed; for rework, the
findings of the failed review, which the SOPs tell builders to fix first.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from tasks_app import actors
from tasks_app.choices import Lane
from tasks_app.models import Task
from tasks_app.pipeline import AUDITOR_LANES

PROMPTS_DIR = Path(settings.BASE_DIR) / "prompts"
SOP_FILES: dict[str, str] = {
    Lane.BACKEND: "backend.md",
    Lane.FRONTEND: "frontend.md",
    Lane.QA: "qa.md",
    Lane.SECURITY: "security_auditor.md",
    Lane.UX: "ux_auditor.md",
    Lane.DATA: "data_analyst.md",
}
MAX_ERROR_CHARS = 4000
MAX_RESULT_CHARS = 6000
MAX_LISTED_FILES = 200


class PromptError(RuntimeError):
    """The role's SOP cannot be read: a configuration fault, not the agent's."""


def sop_for(lane: str) -> str:
    """The role's SOP; a missing file is a configuration fault, reported as such."""
    name = SOP_FILES.get(lane)
    if not name:
        raise PromptError(f"no SOP is defined for lane {lane!r}")
    path = PROMPTS_DIR / name
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PromptError(f"cannot read the {lane} SOP prompts/{name}: {exc}") from None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _format_findings(findings: list) -> list[str]:
    lines = []
    for number, finding in enumerate(findings, start=1):
        if not isinstance(finding, dict):
            continue
        line = f":{finding['line']}" if finding.get("file") and finding.get("line") else ""
        where = f" ({finding['file']}{line})" if finding.get("file") else ""
        by = f" [from {finding['reviewer_lane']} review]" if finding.get("reviewer_lane") else ""
        lines.append(
            f"{number}. [{finding.get('severity', '?')}] {finding.get('title', '')}{where}{by}"
        )
        if finding.get("detail"):
            lines.append(f"   {finding['detail']}")
    return lines


def _review_context(task: Task) -> list[str]:
    parent = task.parent
    if parent is None:
        return []
    lines = [
        f"### The work under review: task #{parent.pk} ({parent.lane})",
        "",
        "Its goal:",
        "",
        parent.goal.strip(),
        "",
    ]
    result = parent.result if isinstance(parent.result, dict) else {}
    if result.get("summary"):
        lines += ["The builder's summary:", "", str(result["summary"])[-MAX_RESULT_CHARS:], ""]
    if parent.branch:
        lines.append(
            f"Branch: {parent.branch}" + (f" at {parent.head_commit}" if parent.head_commit else "")
        )
    base = result.get("base_commit") or ""
    if base and parent.head_commit:
        lines += [
            f"Base commit: {base}",
            f"Head commit: {parent.head_commit}",
            "",
            f"Review exactly this change: `git diff {base}..{parent.head_commit}`.",
            "",
        ]
    files = result.get("changed_files") or []
    if files:
        lines += ["Changed files:", ""]
        for item in files[:MAX_LISTED_FILES]:
            counts = (
                "binary"
                if item.get("added") is None
                else f"+{item.get('added')} −{item.get('removed')}"
            )
            lines.append(f"- {item.get('path')} ({counts})")
        if len(files) > MAX_LISTED_FILES:
            lines.append(f"- … and {len(files) - MAX_LISTED_FILES} more")
        lines.append("")
    elif parent.diff_stat:
        lines += ["Diff stat:", "", parent.diff_stat.strip(), ""]
    earlier = [
        c
        for c in parent.children.filter(review_round=task.review_round, status="completed")
        .exclude(pk=task.pk)
        .order_by("pipeline_step", "id")
    ]
    for review in earlier:
        summary = (
            (review.result or {}).get("summary", "") if isinstance(review.result, dict) else ""
        )
        lines.append(
            f"Earlier review #{review.pk} ({review.lane}): {review.verdict} {summary}".rstrip()
        )
    return lines


def render_prompt(task: Task) -> str:
    """Everything the agent needs, in the order a person would read it."""
    stage = f", {task.stage}" if task.stage else ""
    lines = [
        f"Vibe Factory task #{task.pk} ({task.lane} lane{stage}): {_first_line(task.goal)}",
        "",
        sop_for(task.lane),
        "",
        "---",
        "",
        f"## Your task (#{task.pk})",
        "",
        task.goal.strip(),
        "",
    ]
    context = (_review_context(task) if task.stage else []) + _new_context(task)
    if context:
        lines += ["## Context", "", *context]
    if task.stage or task.lane in AUDITOR_LANES:
        lines += _VERDICT_REMINDER
    return "\n".join(lines).rstrip() + "\n"


_VERDICT_REMINDER = [
    "## Reminder",
    "",
    "End your output with exactly one fenced json verdict block, as the SOP's output "
    "contract says.",
]


def render_resume_prompt(task: Task) -> str:
    """For a resumed session: only what is new since the agent's last turn.

    The agent already has the SOP, the goal and its own work in its session; a rework round
    sends the findings, a retry the previous attempt's error.
    """
    context = _new_context(task)
    if not context:
        context = ["Carry on with the task: the previous run stopped before it finished.", ""]
    lines = [f"Vibe Factory task #{task.pk}, again: {_first_line(task.goal)}", "", *context]
    lines += [
        "Commit your work on this branch when you are done, as the SOP says.",
    ]
    if task.stage or task.lane in AUDITOR_LANES:
        lines += ["", *_VERDICT_REMINDER]
    return "\n".join(lines).rstrip() + "\n"


def _new_context(task: Task) -> list[str]:
    """Rework findings and the previous attempt's error: what changed since the last run."""
    context: list[str] = []
    rework = task.context if isinstance(task.context, dict) else {}
    asked_by = actors.name_of(str(rework.get("changes_requested_by") or ""))
    if rework.get("findings") or rework.get("failed_reviews"):
        why = f"{asked_by} asked for changes" if asked_by else "a review failed"
        context += [
            f"### Rework (round {rework.get('round', task.review_round)}): "
            f"{why}; fix these findings first",
            "",
            *_format_findings(list(rework.get("findings") or [])),
            "",
        ]
        for summary in rework.get("summaries") or []:
            if summary and not asked_by:
                context.append(f"Reviewer's summary: {summary}")
        context.append("")
    if task.attempt_count and (task.last_error_type or task.last_error):
        context += [
            f"### The previous attempt failed ({task.last_error_type or 'error'}), "
            f"attempt {task.attempt_count} of {task.max_attempts}",
            "",
            (task.last_error or "").strip()[-MAX_ERROR_CHARS:],
            "",
        ]
    return context
