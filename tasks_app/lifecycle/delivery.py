"""Delivery, once nothing is left to review: a branch, a merge, or a pull request."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.utils import timezone

from .. import sqlite
from ..choices import WAITING_DELIVERY, Delivery, DeliveryState, Status
from ..models import Task
from .errors import IllegalTransition, InvalidInput, status_label
from .intake import check_actor
from .moves import load, move

MAX_CHANGED_FILES = 2000


# --- Delivery -----------------------------------------------------------------------------------
# Once nothing is left to review, the work is delivered the task's way: `branch` is done when the
# branch is pushed (or committed, with no remote); `merge` waits for an Approver's merge;
# `pull_request` waits while the factory opens one, then for GitHub to say it was merged.


def files_phrase(files: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(files[:limit]) + (
        f" and {len(files) - limit} more" if len(files) > limit else ""
    )
    return f"{len(files)} file{'' if len(files) == 1 else 's'} ({shown})"


def delivery_step(task: Task, *, passed: str) -> tuple[dict, str, str]:
    """Where finished work goes next: the move's fields, its note, and whom to tell."""
    base = task.base_branch or "its base branch"
    if not task.branch:  # not a git workspace: there is no branch to deliver
        return {"status": Status.COMPLETED, "finished_at": timezone.now()}, passed, ""
    if task.delivery == Delivery.MERGE:
        if task.conflicts:
            state = DeliveryState.CONFLICT
            note = (
                f"{passed}; conflicts with {base} in {files_phrase(task.conflicts)}: "
                "rebase and rework, or merge by hand"
            )
        else:
            state = DeliveryState.AWAITING_MERGE
            note = f"{passed}; awaiting an Approver's merge into {base}"
        return {"status": Status.REVIEW_NEEDED, "delivery_state": state}, note, "awaiting_merge"
    if task.delivery == Delivery.PULL_REQUEST:
        if task.pr_number and task.pr_state == "open":  # a rework round: its push updated the PR
            note = f"{passed}; pull request #{task.pr_number} updated"
            fields: dict[str, object] = {
                "status": Status.REVIEW_NEEDED,
                "delivery_state": DeliveryState.AWAITING_MERGE,
            }
            return fields, note, "awaiting_merge"
        if not settings.VIBE_GITHUB_TOKEN:  # nothing would ever open it: say so now
            why = "VIBE_GITHUB_TOKEN is not set, so no pull request can be opened"
            fields = {
                "status": Status.BLOCKED,
                "delivery_state": DeliveryState.FAILED,
                "last_error_type": "pull_request_failed",
                "last_error": f"{why}; set it, then retry",
            }
            return fields, f"{passed}; blocked: {why}", ""
        fields = {"status": Status.REVIEW_NEEDED, "delivery_state": DeliveryState.OPENING_PR}
        return fields, f"{passed}; opening a pull request into {base}", ""
    remote = (task.result or {}).get("remote") if isinstance(task.result, dict) else ""
    if remote:
        state, note = DeliveryState.PUSHED, f"{passed}; branch {task.branch} pushed to {remote}"
    else:
        state, note = DeliveryState.COMMITTED, f"{passed}; committed on branch {task.branch}"
    return (
        {"status": Status.COMPLETED, "finished_at": timezone.now(), "delivery_state": state},
        (note),
        "",
    )


def _load_delivering(task_id: int | str, action: str, states: Sequence[str]) -> Task:
    task = load(task_id)
    if task.status != Status.REVIEW_NEEDED or task.delivery_state not in states:
        where = DeliveryState(task.delivery_state).label.lower() if task.delivery_state else ""
        now = status_label(task.status) + (f", {where}" if where else "")
        wanted = " or ".join(DeliveryState(s).label.lower() for s in states)
        raise IllegalTransition(f"task {task.pk} is {now}; only tasks {wanted} can be {action}")
    return task


def pr_opened(task_id: int | str, *, url: str, number: int, actor: str) -> Task:
    """The factory opened the work's pull request; it waits for GitHub to say merged or closed."""
    actor = check_actor(actor)
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise InvalidInput(f"a pull request number is a whole number above 0, not {number!r}")
    with sqlite.atomic():
        task = _load_delivering(task_id, "given a pull request", [DeliveryState.OPENING_PR])
        return move(
            task,
            Status.REVIEW_NEEDED,
            actor=actor,
            event="pr_opened",
            note=f"pull request #{number} opened: {url}"[:2000],
            notify="awaiting_merge",
            status=Status.REVIEW_NEEDED,
            delivery_state=DeliveryState.AWAITING_MERGE,
            pr_url=str(url)[:500],
            pr_number=number,
            pr_state="open",
        )


def delivery_failed(task_id: int | str, *, error: str, actor: str) -> Task:
    """The pull request could not be opened: a person fixes the cause, then retries."""
    actor = check_actor(actor)
    with sqlite.atomic():
        task = _load_delivering(task_id, "failed delivery", [DeliveryState.OPENING_PR])
        return move(
            task,
            Status.REVIEW_NEEDED,
            actor=actor,
            event="delivery_failed",
            note=f"blocked: the pull request could not be opened: {error}"[:2000],
            status=Status.BLOCKED,
            delivery_state=DeliveryState.FAILED,
            last_error_type="pull_request_failed",
            last_error=str(error)[:4000],
        )


def merged(task_id: int | str, *, actor: str, merge_commit: str = "", note: str = "") -> Task:
    """The work is in its base branch: merged here (Merge) or on GitHub (its pull request)."""
    actor = check_actor(actor)
    with sqlite.atomic():
        task = load(task_id)
        waiting = task.status == Status.REVIEW_NEEDED and task.delivery_state in WAITING_DELIVERY
        closed = task.status == Status.BLOCKED and task.delivery_state == DeliveryState.PR_CLOSED
        if not (waiting or closed):
            raise IllegalTransition(
                f"task {task.pk} is {status_label(task.status)}; only work awaiting merge (or "
                "whose pull request was closed) can be marked merged"
            )
        fields: dict = {"merge_commit": str(merge_commit or "")[:64]}
        if task.pr_number:
            fields["pr_state"] = "merged"
        return move(
            task,
            task.status,
            actor=actor,
            event="merged",
            note=(note or f"merged into {task.base_branch or 'its base'}")[:2000],
            status=Status.COMPLETED,
            delivery_state=DeliveryState.MERGED,
            finished_at=timezone.now(),
            conflicts=[],
            last_error_type="",
            last_error="",
            **fields,
        )


def pr_closed(task_id: int | str, *, actor: str) -> Task:
    """Closed without merging: the work waits for a person, with that reason."""
    actor = check_actor(actor)
    with sqlite.atomic():
        task = _load_delivering(
            task_id, "closed", [DeliveryState.AWAITING_MERGE, DeliveryState.CONFLICT]
        )
        reason = f"pull request #{task.pr_number} was closed without merging"
        return move(
            task,
            Status.REVIEW_NEEDED,
            actor=actor,
            event="pr_closed",
            note=f"blocked: {reason}",
            status=Status.BLOCKED,
            delivery_state=DeliveryState.PR_CLOSED,
            pr_state="closed",
            last_error_type="pr_closed",
            last_error=reason,
        )


def record_conflicts(task_id: int | str, files: Sequence[str], *, actor: str) -> Task:
    """A merge check of work awaiting merge: conflicting files, or (empty) merges cleanly now."""
    actor = check_actor(actor)
    files = [str(f)[:1000] for f in files][:MAX_CHANGED_FILES]
    with sqlite.atomic():
        task = _load_delivering(
            task_id, "checked for conflicts", [DeliveryState.AWAITING_MERGE, DeliveryState.CONFLICT]
        )
        base = task.base_branch or "its base"
        state = DeliveryState.CONFLICT if files else DeliveryState.AWAITING_MERGE
        if list(task.conflicts or []) == files and task.delivery_state == state:
            return task
        note = (
            f"conflicts with {base} in {files_phrase(files)}: nothing was merged"
            if files
            else f"merges cleanly into {base} again"
        )
        return move(
            task,
            Status.REVIEW_NEEDED,
            actor=actor,
            event="conflicts_checked",
            note=note[:2000],
            status=Status.REVIEW_NEEDED,
            delivery_state=state,
            conflicts=files,
        )
