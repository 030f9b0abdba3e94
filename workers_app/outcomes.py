"""What a finished run means for its task: pure, so every rule can be tested on its own.

An outcome is what the agent reported, not its exit code: a builder succeeds only when the agent
did not say it failed and something changed; a reviewer only when it returned a verdict and
changed nothing. The order of the checks is the order a person would ask in: did it stop in
time, did the provider let it work, did it say it failed, and only then: did it do the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks_app.verdicts import VerdictError, parse_verdict

from .adapters.base import BUILDER, Report
from .runner import RunResult
from .workspace import Change

ERROR_LINES = 40
SUMMARY_LINES = 30


def last_lines(text: str, count: int) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-count:])


@dataclass
class Outcome:
    """`error_type` empty: the task completes with `result`; otherwise it fails with it."""

    error_type: str = ""
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return not self.error_type


@dataclass(frozen=True)
class Finished:
    """Everything known about a run once its agent has exited."""

    role: str
    lane: str
    run: RunResult
    report: Report
    timeout: float
    change: Change | None = None  # a builder's change, after the worker's commit (git only)
    reviewer_changed: bool = False  # a reviewer left changes (already set aside)
    snapshot: dict[str, Any] = field(default_factory=dict)


def _agent_words(finished: Finished) -> str:
    report, run = finished.report, finished.run
    text = report.error or (run.stderr if run.stderr.strip() else run.stdout)
    return last_lines(text, ERROR_LINES)


def decide(finished: Finished) -> Outcome:
    """The outcome of a run; see the module docstring for the order of the checks."""
    run, report = finished.run, finished.report
    if run.timed_out:
        return Outcome(
            "timeout",
            f"the agent ran past its time limit of {finished.timeout:g}s and was stopped\n"
            + last_lines(run.stderr or run.stdout, ERROR_LINES),
        )
    if report.error_type:
        return Outcome(
            report.error_type,
            f"the agent reported {report.error_type}: {_agent_words(finished)}".strip(),
            retry_after=report.retry_after,
        )
    if run.exit_code != 0:
        return Outcome(
            "agent_exit",
            f"the agent exited with status {run.exit_code}; its last output:\n"
            + _agent_words(finished),
        )
    if report.success is False:
        return Outcome(
            "agent_exit", "the agent reported that it failed:\n" + _agent_words(finished)
        )
    if finished.role == BUILDER:
        return _builder(finished)
    return _reviewer(finished)


def _builder(finished: Finished) -> Outcome:
    report, change = finished.report, finished.change
    if change is not None and change.empty:
        if report.permission_denials:
            return Outcome(
                "permission_denied",
                "the agent changed nothing and was refused: "
                + ", ".join(sorted(set(report.permission_denials))),
            )
        return Outcome(
            "no_change",
            "the agent said it succeeded but the branch has no change from its base\n"
            + last_lines(report.final_text or finished.run.stdout, ERROR_LINES),
        )
    summary = last_lines(report.final_text or finished.run.stdout, SUMMARY_LINES)
    return Outcome(result={"summary": summary, **finished.snapshot})


def _reviewer(finished: Finished) -> Outcome:
    if finished.reviewer_changed:
        return Outcome(
            "reviewer_modified",
            "the reviewer changed files; its changes were set aside and the review runs again",
        )
    text = finished.report.final_text or finished.run.stdout
    try:
        verdict = parse_verdict(text, lane=finished.lane)
    except VerdictError as exc:
        return Outcome("bad_verdict", f"bad verdict: {exc}")
    return Outcome(result={**verdict, **finished.snapshot})
