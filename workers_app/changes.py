"""What a finished agent left in its workspace: a builder's work committed, diffed and pushed;
a reviewer's stray edits set aside on a ref of their own. The facts go to `outcomes.decide`, and
`conclude` turns its outcome into the slot's Ending.
"""

from __future__ import annotations

from dataclasses import replace

from . import budgets, diffs, outcomes
from .adapters import BUILDER
from .adapters.base import Report
from .git import RemoteError
from .runner import RunResult
from .slots import Ending, Slot
from .workspace import Change, Workspace


def first_line(text: str) -> str:
    """The first line with text in it, short enough for a note."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:120]


def conclude(
    slot: Slot, result: RunResult, report: Report, *, author: str, timeout: float
) -> Ending:
    """What a run that was not stopped came to: its change looked at, its outcome decided."""
    finished = look_at_change(slot, result, report, author=author, timeout=timeout)
    if slot.over_budget:
        outcome = outcomes.over_budget(budgets.run_cost(report.usage), slot.budget_left)
    else:
        outcome = outcomes.decide(finished)
    return Ending(
        outcome.error_type or "completed",
        result=result,
        report=finished.report,
        change=finished.change,
        task_result=outcome.result if outcome.ok else None,
        error=outcome.error,
        retry_after=outcome.retry_after,
    )


def look_at_change(
    slot: Slot, result: RunResult, report: Report, *, author: str, timeout: float
) -> outcomes.Finished:
    """Commit what a builder left; set aside what a reviewer changed."""
    workspace = slot.workspace
    change = None
    reviewer_changed = False
    snapshot: dict = {}
    if workspace is not None and workspace.is_git:
        if slot.role == BUILDER:
            change, report, snapshot = _keep_build(slot, workspace, report, author)
        else:
            reviewer_changed, snapshot = _set_aside_review(slot, workspace)
        # Checked again at review time: the base may have moved since the build.
        conflicts = workspace.merge_conflicts()
        if conflicts is not None:
            snapshot["conflicts"] = conflicts
    return outcomes.Finished(
        role=slot.role,
        lane=slot.task.lane,
        run=result,
        report=report,
        timeout=timeout,
        change=change,
        reviewer_changed=reviewer_changed,
        snapshot=snapshot,
    )


def _keep_build(
    slot: Slot, workspace: Workspace, report: Report, author: str
) -> tuple[Change, Report, dict]:
    """A builder's run: its changes committed, its diff kept, its branch pushed; returns
    the change, the report (a failed push is its error) and the task's snapshot."""
    attempt = slot.task.attempt_count + 1
    message = f"task #{slot.task.pk}: {first_line(slot.task.goal)} (attempt {attempt})"
    if workspace.commit_all(author=author, message=message):
        slot.note("committed the changes the agent left")
    change = workspace.change()
    # Kept with the run: the web server that shows it may have no git, or another clone,
    # and the worktree moves on.
    slot.patch = diffs.patch(workspace.path, change.base, change.head)
    if not change.empty:  # to the shared remote, where reviewers on any host fetch it
        report = _push(slot, workspace, report)
    snapshot = {
        **workspace.snapshot(),
        "base_commit": change.base,
        "changed_files": change.files,
        "base_branch": workspace.base_branch,
        "remote": workspace.remote if workspace.on_remote() else "",
    }
    return change, report, snapshot


def _push(slot: Slot, workspace: Workspace, report: Report) -> Report:
    try:
        if workspace.push():
            slot.note(f"pushed {workspace.branch} to {workspace.remote}")
    except RemoteError as exc:
        slot.note(f"could not push {workspace.branch}: {exc}")
        if not report.error_type:  # the agent's own failure says more
            report = replace(report, error_type=exc.error_type, error=str(exc))
    return report


def _set_aside_review(slot: Slot, workspace: Workspace) -> tuple[bool, dict]:
    """A reviewer's run: whatever it changed kept on a ref of its own, out of the branch."""
    ref = f"refs/vibe/set-aside/task-{slot.task.pk}-run-{slot.run_id}"
    changed = bool(workspace.set_aside(slot.head_before, ref))
    if changed:
        slot.note(f"the reviewer changed files: set aside on {ref}", ref=ref)
    return changed, workspace.snapshot()
