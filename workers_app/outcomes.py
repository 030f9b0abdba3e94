"""What a finished run means for its task: pure, so every rule can be tested on its own.

An outcome is what the agent reported, not its exit code: a builder succeeds only when the agent
did not say it failed and something changed; a reviewer only when it returned a verdict and
changed nothing. The order of the checks is the order a person would ask in: did it stop in
time, did the provider let it work, did it say it failed, and only then: did it do the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tasks_app.verdicts import VerdictError, parse_verdict

from .adapters.base import BUILDER, Report
from .git import WorkspaceError
from .profiles import ProfileError
from .prompting import PromptError
from .runner import RunResult
from .sandbox import SandboxError
from .slots import Refused
from .workspace import Change

ERROR_LINES = 40
SUMMARY_LINES = 30
LAPSED_NOTE = "released: the worker could not renew its lease in time"


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


@dataclass(frozen=True)
class Interrupted:
    """A run the worker itself stopped: this, not what the agent did, is its outcome."""

    outcome: str  # `cancelled`, `lease_lost` or `released`
    note: str = ""  # the history note of the release
    give_back: bool = False  # a lapsed claim nobody may have taken yet: release it


def interrupted(*, lost: str, lapsed: bool, releasing: bool) -> Interrupted | None:
    """Whether the worker's own stop decides the run, before anything the agent reported.

    A claim lost (cancelled, taken over) reports nothing; a lapsed lease is given back if still
    held, since whatever the agent did is not this worker's to report; a shutdown releases.
    """
    if lost:
        return Interrupted(lost)
    if lapsed:
        return Interrupted("lease_lost", LAPSED_NOTE, give_back=True)
    if releasing:
        return Interrupted("released", "released: worker shutting down")
    return None


def over_budget(spent: Decimal | None, left: Decimal | None) -> Outcome:
    """A run the worker stopped when it had spent what was left of its task's budget."""
    return Outcome(
        "budget_exceeded",
        f"the run was stopped at ${spent} of the ${left} left of the task's "
        "budget (VIBE_TASK_BUDGET_USD)",
    )


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


def start_failure(exc: Exception) -> tuple[str, str] | None:
    """A run that could not start, as the failure type a person can act on; None: unforeseen
    (recorded as the worker's own error)."""
    if isinstance(exc, Refused):
        return exc.error_type, str(exc)
    if isinstance(exc, SandboxError):
        return "sandbox_error", str(exc)
    if isinstance(exc, WorkspaceError):
        return getattr(exc, "error_type", "workspace_error"), str(exc)
    if isinstance(exc, PromptError | ProfileError):
        return "config_error", str(exc)
    if isinstance(exc, FileNotFoundError):
        return "agent_missing", f"agent command not found: {exc.filename or exc}"
    if isinstance(exc, PermissionError):
        return "agent_missing", f"agent command is not executable: {exc.filename or exc}"
    return None
