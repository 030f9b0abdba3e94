"""Who may do what: one table, used by the pages, the admin, chat and the CLI alike."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

ACTION_PERMISSIONS: dict[str, str] = {
    "approve": "tasks_app.approve_task",
    "retry": "tasks_app.retry_task",
    "cancel": "tasks_app.cancel_task",
    "pause": "workers_app.manage_workers",
    "resume": "workers_app.manage_workers",
    "retire": "workers_app.manage_workers",
    "submit": "tasks_app.add_task",
    "merge": "tasks_app.merge_task",
    "rework": "tasks_app.rework_task",
    "rebase": "tasks_app.rework_task",
}


def can(user, action: str) -> bool:
    """True when `user` (a Django user, or None for an unknown person) may perform `action`."""
    if user is None or not getattr(user, "is_active", False):
        return False
    return user.has_perm(ACTION_PERMISSIONS[action])


WORKER_ACTIONS = ("pause", "resume", "retire")


def require(user, action: str, *, target: str = "", door: str = "web") -> None:
    """Raise PermissionDenied unless `user` may; the refusal is kept in the audit log."""
    if can(user, action):
        return
    who = user.get_username() if user is not None else "an unlinked user"
    what = "workers" if action in WORKER_ACTIONS else "tasks"
    message = f"{who} may not {action} {what} here"
    from . import lifecycle

    actor = f"user:{who}" if user is not None else "unknown"
    lifecycle.refused(action, target, actor=actor, reason=message, door=door)
    raise PermissionDenied(message)
