"""Every door's task actions, in one table: the board, the admin, chat and the CLI.

A door looks an action up here, checks the person's permission (`permissions`), and performs it;
no door calls the lifecycle's people's moves itself, so a new action is one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import lifecycle
from .models import Task
from .permissions import can


def _merge(task_id: int | str, *, actor: str, comment: str = "") -> Task:
    from workers_app import delivery  # git lives with the workers

    return delivery.merge(task_id, actor=actor).task


def _rework(task_id: int | str, *, actor: str, comment: str = "") -> Task:
    return lifecycle.request_changes(task_id, comment=comment, actor=actor)


def _rebase(task_id: int | str, *, actor: str, comment: str = "") -> Task:
    from workers_app import delivery

    task = lifecycle._load(task_id, lock=False)
    asked = delivery.rebase_comment(task) + (f"\n\n{comment.strip()}" if comment.strip() else "")
    return lifecycle.request_changes(task.pk, comment=asked, actor=actor)


@dataclass(frozen=True)
class Action:
    name: str
    label: str  # the button's words
    done: str  # "Task #5 <done>."
    run: Callable[..., Task]
    needs_comment: bool = False
    # The permission's row in permissions.ACTION_PERMISSIONS (default: the action's own name).
    permission: str = ""

    @property
    def permission_name(self) -> str:
        return self.permission or self.name

    def allowed(self, user) -> bool:
        return can(user, self.permission_name)

    def perform(self, task_id: int | str, *, actor: str, comment: str = "") -> Task:
        """Act (the door has checked the person may); raises a LifecycleError when refused.

        A refusal is kept in the audit log with its reason, whichever door it came through.
        """
        try:
            return self.run(task_id, actor=actor, comment=comment)
        except lifecycle.LifecycleError as exc:
            lifecycle.refused(self.name, f"task {task_id}"[:200], actor=actor, reason=str(exc))
            raise

    def refuse(self, task_id: int | str, *, actor: str, reason: str, door: str = "") -> None:
        """Record that a door turned the person away before acting (no permission)."""
        lifecycle.refused(self.name, f"task {task_id}", actor=actor, reason=reason, door=door)


ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action(
            "approve",
            "Approve",
            "approved",
            lambda pk, **kw: lifecycle.approve(pk, actor=kw["actor"]),
        ),
        Action(
            "retry", "Retry", "retried", lambda pk, **kw: lifecycle.retry(pk, actor=kw["actor"])
        ),
        Action(
            "cancel",
            "Cancel",
            "cancelled",
            lambda pk, **kw: lifecycle.cancel(pk, actor=kw["actor"]),
        ),
        Action("merge", "Merge", "merged", _merge),
        Action("rework", "Request changes", "sent back for changes", _rework, needs_comment=True),
        Action("rebase", "Rebase and rework", "sent back to rebase", _rebase, permission="rework"),
    )
}


def get(name: str) -> Action | None:
    return ACTIONS.get(name)
