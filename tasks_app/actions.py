"""Every door's task and worker actions, and who may do them: the board and pool, the admin, chat
and the CLI read the same rows.

A door looks an action up here, checks the person's permission (`can`, `require`), and performs it;
no door calls the lifecycle's people's moves itself, so a new action is one row here. A worker
action also says which workers a page offers it to (`offered`): Resume only to a worker with a
live process, Retire only to a silent one holding no task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied

from workers_app import delivery  # git lives with the workers

from . import actors, lifecycle
from .choices import OPEN_STATUSES, WAITING_DELIVERY, Delivery, DeliveryState, Status
from .models import Task

SUBMIT_PERMISSION = "tasks_app.add_task"
MANAGE_WORKERS = "workers_app.manage_workers"


def _merge(task_id: int | str, *, actor: str, comment: str = "") -> Task:
    return delivery.merge(task_id, actor=actor).task


def _rework(task_id: int | str, *, actor: str, comment: str = "") -> Task:
    return lifecycle.request_changes(task_id, comment=comment, actor=actor)


def _rebase(task_id: int | str, *, actor: str, comment: str = "") -> Task:
    task = lifecycle.moves.load(task_id, lock=False)
    asked = delivery.rebase_comment(task) + (f"\n\n{comment.strip()}" if comment.strip() else "")
    return lifecycle.request_changes(task.pk, comment=asked, actor=actor)


@dataclass(frozen=True)
class Action:
    name: str
    label: str  # the button's words
    done: str  # "Task #5 <done>."
    run: Callable[..., Task]
    grant: str  # the Django permission a person needs
    # The statuses it applies to; the lifecycle's move checks the finer rules and says why.
    statuses: tuple[str, ...] = ()
    needs_comment: bool = False
    # The action whose permission refusals name (default: its own; rebase is a kind of rework).
    permission: str = ""
    # A finer test of the task beyond its status (delivery state, say); None: none.
    when: Callable[[Task], bool] | None = None

    def offered(self, task: Task) -> bool:
        """Whether a page or chat reply offers this action for the task as it is now."""
        if self.statuses and task.status not in self.statuses:
            return False
        return self.when is None or self.when(task)

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


def _awaits_merge(task: Task) -> bool:
    return task.delivery == Delivery.MERGE and task.delivery_state == DeliveryState.AWAITING_MERGE


def _conflicts(task: Task) -> bool:
    return task.delivery_state == DeliveryState.CONFLICT


def _reworkable(task: Task) -> bool:
    if task.is_review:
        return False
    if task.status == Status.REVIEW_NEEDED:
        return task.delivery_state in WAITING_DELIVERY
    if task.status == Status.COMPLETED:
        return bool(task.branch) and task.delivery_state != DeliveryState.MERGED
    return True


ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action(
            "approve",
            "Approve",
            "approved",
            lambda pk, **kw: lifecycle.approve(pk, actor=kw["actor"]),
            "tasks_app.approve_task",
            statuses=(Status.AWAITING_APPROVAL,),
        ),
        Action(
            "retry",
            "Retry",
            "retried",
            lambda pk, **kw: lifecycle.retry(pk, actor=kw["actor"]),
            "tasks_app.retry_task",
            statuses=(Status.DEAD_LETTER, Status.BLOCKED),
        ),
        Action(
            "cancel",
            "Cancel",
            "cancelled",
            lambda pk, **kw: lifecycle.cancel(pk, actor=kw["actor"]),
            "tasks_app.cancel_task",
            statuses=tuple(OPEN_STATUSES),
        ),
        Action(
            "merge",
            "Merge",
            "merged",
            _merge,
            "tasks_app.merge_task",
            statuses=(Status.REVIEW_NEEDED,),
            when=_awaits_merge,
        ),
        Action(
            "rework",
            "Request changes",
            "sent back for changes",
            _rework,
            "tasks_app.rework_task",
            statuses=lifecycle.REWORKABLE,
            needs_comment=True,
            when=_reworkable,
        ),
        Action(
            "rebase",
            "Rebase and rework",
            "sent back to rebase",
            _rebase,
            "tasks_app.rework_task",
            statuses=(Status.REVIEW_NEEDED,),
            permission="rework",
            when=_conflicts,
        ),
    )
}


def task_actions_for(task: Task, user) -> list[Action]:
    """The task actions offered to this person for this task as it is now."""
    return [a for a in ACTIONS.values() if a.offered(task) and a.allowed(user)]


def get(name: str) -> Action | None:
    return ACTIONS.get(name)


# --- Workers ----------------------------------------------------------------------------------


def _offer_pause(worker) -> bool:
    return worker.is_alive and worker.status == "online"


def _offer_resume(worker) -> bool:
    # Only a live process can act on a resume; a silent worker is offered Retire instead.
    return worker.is_alive and worker.status in ("paused", "draining", "offline")


def _offer_retire(worker) -> bool:
    return not worker.is_alive and not worker.is_retired and worker.active_tasks == 0


@dataclass(frozen=True)
class WorkerAction:
    """A person's move on a worker, read by the pool page, the admin, chat and the CLI."""

    name: str
    label: str
    done: str  # "Worker @qa-1 <done>."
    run: Callable[..., object]
    offered_to: Callable[[object], bool]  # which workers a page offers it to
    grant: str = MANAGE_WORKERS
    primary: bool = False
    note: str = ""  # what it means, said after it is done (and asked first, with `confirm`)
    confirm: bool = False

    def allowed(self, user) -> bool:
        return can(user, self.name)

    def offered(self, worker) -> bool:
        return self.offered_to(worker)

    def perform(self, worker_id: str, *, actor: str):
        """Act (the door has checked the person may); a refusal is audited and raised."""
        try:
            return self.run(worker_id, actor=actor)
        except lifecycle.LifecycleError as exc:
            lifecycle.refused(self.name, f"worker {worker_id}"[:200], actor=actor, reason=str(exc))
            raise

    def refuse(self, worker_id: str, *, actor: str, reason: str, door: str = "") -> None:
        lifecycle.refused(
            self.name, f"worker {worker_id}"[:200], actor=actor, reason=reason, door=door
        )


WORKER_ACTIONS: dict[str, WorkerAction] = {
    action.name: action
    for action in (
        WorkerAction("pause", "Pause", "paused", lifecycle.pause_worker, _offer_pause),
        WorkerAction(
            "resume", "Resume", "resumed", lifecycle.resume_worker, _offer_resume, primary=True
        ),
        WorkerAction(
            "retire",
            "Retire",
            "retired",
            lifecycle.retire_worker,
            _offer_retire,
            note="It leaves the pool and the counts until it heartbeats again; its tasks keep "
            "its name.",
            confirm=True,
        ),
    )
}


def worker_actions_for(worker, user) -> list[WorkerAction]:
    """The worker actions a page offers this person for this worker's state."""
    return [a for a in WORKER_ACTIONS.values() if a.offered(worker) and a.allowed(user)]


# --- Who may ----------------------------------------------------------------------------------

# Each action's Django permission, read from the rows above; submitting has no row (it moves no
# task that exists yet) but is asked for at every door the same way.
ACTION_PERMISSIONS: dict[str, str] = {
    **{a.name: a.grant for a in ACTIONS.values()},
    **{a.name: a.grant for a in WORKER_ACTIONS.values()},
    "submit": SUBMIT_PERMISSION,
}


def can(user, action: str) -> bool:
    """True when `user` (a Django user, or None for an unknown person) may perform `action`."""
    if user is None or not getattr(user, "is_active", False):
        return False
    return user.has_perm(ACTION_PERMISSIONS[action])


def require(user, action: str, *, target: str = "", door: str = "web") -> None:
    """Raise PermissionDenied unless `user` may; the refusal is kept in the audit log."""
    if can(user, action):
        return
    who = user.get_username() if user is not None else "an unlinked user"
    what = "workers" if action in WORKER_ACTIONS else "tasks"
    message = f"{who} may not {action} {what} here"
    actor = actors.user(who) if user is not None else "unknown"
    lifecycle.refused(action, target, actor=actor, reason=message, door=door)
    raise PermissionDenied(message)
