"""The one command grammar behind `/vibe` in Slack and Discord and `manage.py vibe`.

`execute("retry 42", user=…, actor="slack:U123", door="slack")` returns a `Reply` of plain,
unescaped text plus structured data; each front door renders it (and escapes it) its own way.
Nothing here raises for user input: unknown commands get the usage, lifecycle refusals come back
as replies with the lifecycle's own message.

From chat (any door but "cli"), reading needs a linked, active person who may view tasks, and
what a reply shows of agents' text is redacted (`redact.py`) and trimmed: a channel is read by
more people than the task page, and kept by the chat service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tasks_app import actions, actors, lifecycle
from tasks_app.actions import ACTION_PERMISSIONS, can
from tasks_app.choices import Status
from workers_app.models import Worker

from .messages import task_url
from .reads import dlq_reply, status_reply, task_reply, worker_reply
from .replies import (
    READ_PERMISSION,
    Button,
    Reply,
    _preview,
    _refusal,
    for_chat,
)

logger = logging.getLogger(__name__)

USAGE = [
    "status — workers by lane and tasks by status",
    "submit <lane> [key:K] [risk:R] [priority:N] <goal> — new work for a lane",
    "retry <id> [<id> …] — send dead-letter or blocked tasks back to pending",
    "approve <id> [<id> …] — approve high-risk tasks",
    "cancel <id> [<id> …] — stop open tasks for good",
    "merge <id> — merge a task's reviewed branch into its base",
    "rework <id> <comment> — ask for changes: a rework round on the same branch",
    "rebase <id> [<comment>] — rework a conflicting branch onto its base",
    "dlq — the dead-letter queue, newest first",
    "worker <id> — one worker: lane, load, heartbeat, current tasks",
    "pause <worker> / resume <worker> — stop a worker claiming, or let it claim again",
    "retire <worker> — take a stopped worker out of the pool (its tasks keep its name)",
    "task <id> — one task with its history",
    "help — this list",
]


def help_reply(*, ok: bool = True, prefix: str = "") -> Reply:
    title = (prefix + " " if prefix else "") + "Usage: /vibe <command>"
    return Reply(ok=ok, title=title.strip(), lines=list(USAGE), data={"ok": ok, "usage": USAGE})


# --- Commands that change something -----------------------------------------------------------


def _link_hint(door: str, actor: str) -> str:
    if door not in ("slack", "discord"):
        return ""
    external = actors.parse(actor).name
    return (
        f" Ask an admin to link your {door.capitalize()} account: "
        f"`python manage.py vibe link {door} {external} <username>`."
    )


def may_read(user) -> bool:
    """A linked, active person who may view tasks (the Viewer role and up)."""
    return user is not None and user.is_active and user.has_perm(READ_PERMISSION)


def _read_refusal(command: str, *, user, actor: str, door: str) -> Reply:
    logger.warning(
        "refused %s by %s (%s)",
        command,
        actor,
        user.get_username() if user is not None else "unlinked",
    )
    lifecycle.refused(command, "", actor=actor, reason="no permission to read", door=door)
    if user is None:
        message = "You are not linked to a Vibe Factory user, so you cannot read tasks here."
        return _refusal(message + _link_hint(door, actor), refused=True)
    return _refusal(
        f"{user.get_username()} does not have the permission to view tasks ({READ_PERMISSION}).",
        refused=True,
    )


def _not_allowed(action: str, what: str, permission: str, *, user, actor: str, door: str) -> Reply:
    """A person who may not: unlinked (told how to link) or without the permission."""
    if user is None:
        message = f"You are not linked to a Vibe Factory user, so you cannot {action} {what}."
        return _refusal(message + _link_hint(door, actor), refused=True)
    return _refusal(
        f"{user.get_username()} does not have the permission to {action} {what} "
        f"({ACTION_PERMISSIONS[permission]}).",
        refused=True,
    )


CHAT_ACTIONS = ("retry", "approve", "cancel", "merge", "rework", "rebase")
# What chat says after each action (the table's words are for buttons and pages).
TITLES = {
    "retry": "Task #{pk} reset to pending (attempts cleared)",
    "approve": "Task #{pk} approved",
    "cancel": "Task #{pk} cancelled",
    "merge": "Task #{pk} merged into {base}",
    "rework": "Task #{pk} sent back for changes",
    "rebase": "Task #{pk} sent back to rebase onto {base}",
}


def _act(
    action: str, task_id: str, *, user, actor: str, door: str, trusted: bool, comment: str = ""
) -> Reply:
    chosen = actions.ACTIONS[action]
    if not trusted and not chosen.allowed(user):
        logger.warning(
            "refused %s of task %s by %s (%s)",
            action,
            task_id,
            actor,
            user.get_username() if user is not None else "unlinked",
        )
        chosen.refuse(task_id, actor=actor, reason="no permission", door=door)
        return _not_allowed(
            action, "tasks", chosen.permission_name, user=user, actor=actor, door=door
        )
    try:
        task = chosen.perform(task_id, actor=actor, comment=comment)
    except lifecycle.LifecycleError as exc:
        reply = _refusal(str(exc))
        files = getattr(exc, "files", None)
        if files is not None:  # a merge conflict: offer the way out
            reply.data["conflicts"] = files
            reply.buttons.append(Button("rebase", int(task_id), "Rebase and rework"))
        return reply
    title = TITLES[action].format(pk=task.pk, base=task.base_branch or "its base")
    data = {"ok": True, "id": task.pk, "status": task.status, "action": action, "by": actor}
    if task.merge_commit and action == "merge":
        data["merge_commit"] = task.merge_commit
    # In chat others read along, so the goal is shown; the shell typed the id and sees the title.
    lines = [] if door == "cli" else [_preview(task.goal, for_chat=True)]
    return Reply(ok=True, title=title, lines=lines, data=data)


# Actions one line may apply to several tasks ("retry 261 263"); each id is answered.
MULTI_ACTIONS = ("retry", "approve", "cancel")
MAX_IDS_PER_LINE = 50


def act_many(action: str, task_ids, *, user, actor: str, door: str, trusted: bool) -> Reply:
    """`action` on each task in turn: one reply whose lines answer each id, in the order given.

    One id is the plain single-task reply. A person who may not act is refused once (each id
    is still kept in the audit log); a lifecycle refusal of one id does not stop the others.
    """
    # "261 #263", "261,263": each id once, in the order given.
    words = [word for pk in task_ids for word in str(pk).replace(",", " ").split()]
    ids = list(dict.fromkeys(word.lstrip("#") for word in words)) or [""]
    first = _act(action, ids[0], user=user, actor=actor, door=door, trusted=trusted)
    if len(ids) == 1:
        return first
    chosen = actions.ACTIONS[action]
    if first.data.get("refused"):
        for pk in ids[1:]:
            chosen.refuse(pk, actor=actor, reason="no permission", door=door)
        first.data["ids"] = ids
        return first
    replies = [first] + [
        _act(action, pk, user=user, actor=actor, door=door, trusted=trusted) for pk in ids[1:]
    ]
    done = sum(reply.ok for reply in replies)
    return Reply(
        ok=done == len(replies),
        title=f"{done} of {len(replies)} tasks {chosen.done}",
        lines=[f"{'✓' if reply.ok else '✗'} {reply.title}" for reply in replies],
        data={
            "ok": done == len(replies),
            "action": action,
            "done": done,
            "results": [reply.data for reply in replies],
        },
    )


# `submit <lane> [key:K] [risk:R] [priority:N] <goal…>`: these may come before the goal.
SUBMIT_OPTIONS = ("key", "risk", "priority")


def _permission_refusal(action: str, target: str, *, user, actor: str, door: str) -> Reply:
    """The person may not `action` (unlinked, or lacking the permission): said and audited."""
    logger.warning(
        "refused %s of %s by %s (%s)",
        action,
        target or "?",
        actor,
        user.get_username() if user is not None else "unlinked",
    )
    lifecycle.refused(action, target, actor=actor, reason="no permission", door=door)
    return _not_allowed(action, "tasks", action, user=user, actor=actor, door=door)


def submit_reply(line: str, *, user, actor: str, door: str, trusted: bool) -> Reply:
    """New work from `<lane> [key:K] [risk:R] [priority:N] <goal…>`; the goal is kept as typed.

    Answered with the new task's id and link. With a `key:` already used nothing new is made
    (the earlier task is the answer), so a resent command never makes the work twice.
    """
    lane, _, rest = (line or "").strip().partition(" ")
    options: dict[str, str] = {}
    while rest.strip():
        word, _, remainder = rest.strip().partition(" ")
        name, colon, value = word.partition(":")
        if not colon or name.lower() not in SUBMIT_OPTIONS:
            break
        options[name.lower()] = value
        rest = remainder
    goal = rest.strip()
    if not lane or not goal:
        return help_reply(ok=False, prefix="Say the lane and the goal: submit <lane> <goal>.")
    target = f"lane {lane[:40]}"
    if not trusted and not can(user, "submit"):
        return _permission_refusal("submit", target, user=user, actor=actor, door=door)
    try:
        priority = int(options.get("priority", "50"))
    except ValueError:
        return _refusal(f"priority {options['priority'][:20]!r} is not a whole number (0–100)")
    try:
        task = lifecycle.submit(
            goal,
            lane=lane.lower(),
            actor=actor,
            risk=options.get("risk", "low").lower(),
            priority=priority,
            key=options.get("key", ""),
        )
    except lifecycle.LifecycleError as exc:
        lifecycle.refused("submit", target, actor=actor, reason=str(exc), door=door)
        return _refusal(str(exc))
    before = getattr(task, "was_submitted_before", False)
    if before:
        title = f"Task #{task.pk} was already submitted with key {task.idempotency_key!r}"
    elif task.status == Status.AWAITING_APPROVAL:
        title = f"Task #{task.pk} submitted; high risk, it waits for approval"
    else:
        title = f"Task #{task.pk} submitted to the {task.lane} lane"
    url = task_url(task)
    lines = [] if door == "cli" else [_preview(task.goal, for_chat=True)]
    lines += [url] if url else []
    buttons = []
    if task.status == Status.AWAITING_APPROVAL:
        buttons.append(Button("approve", task.pk, f"Approve #{task.pk}"))
    data = {
        "ok": True,
        "id": task.pk,
        "status": task.status,
        "existing": before,
        "url": url,
        "action": "submit",
        "by": actor,
    }
    return Reply(ok=True, title=title, lines=lines, data=data, buttons=buttons)


def _after_words(text: str, count: int) -> str:
    """What follows the first `count` words of a command line, as typed."""
    parts = (text or "").replace("\x00", "").split(None, count)
    return parts[count].strip() if len(parts) > count else ""


WORKER_TITLES = {
    "pause": "Worker {pk} paused: it finishes its running tasks and claims nothing new",
    "resume": "Worker {pk} resumed",
    "retire": "Worker {pk} retired: out of the pool and the counts until it heartbeats again",
}


def _worker_pk(worker_id: str) -> str:
    """`qa-1` means `@qa-1` unless a worker is really called `qa-1`."""
    worker_id = worker_id.strip()
    if worker_id.startswith("@") or Worker.objects.filter(pk=worker_id).exists():
        return worker_id
    return "@" + worker_id


def act_on_worker(action: str, worker_id: str, *, user, actor: str, door: str, trusted: bool):
    """pause, resume or retire a worker from chat or the CLI, through the worker action table."""
    chosen = actions.WORKER_ACTIONS[action]
    worker_id = _worker_pk(worker_id)[:64]
    if not trusted and not chosen.allowed(user):
        logger.warning("refused %s of worker %s by %s", action, worker_id, actor)
        chosen.refuse(worker_id, actor=actor, reason="no permission", door=door)
        return _not_allowed(action, "workers", action, user=user, actor=actor, door=door)
    try:
        worker = chosen.perform(worker_id, actor=actor)
    except lifecycle.LifecycleError as exc:
        return _refusal(str(exc))
    lines = []
    if action == "resume" and not worker.is_alive:
        lines.append("It has no live process: it claims once it is started.")
    data = {"ok": True, "worker_id": worker.pk, "action": action, "by": actor}
    data["status"] = "retired" if action == "retire" else worker.status
    return Reply(ok=True, title=WORKER_TITLES[action].format(pk=worker.pk), lines=lines, data=data)


def execute(text: str, *, user, actor: str, door: str, trusted: bool = False) -> Reply:
    """Run one command line (what follows `/vibe`)."""
    reply = _execute(text, user=user, actor=actor, door=door, trusted=trusted)
    return reply if door == "cli" else for_chat(reply)


def _read(command: str, args: list[str], *, chat: bool) -> Callable[[], Reply] | None:
    """The read a well-formed line asks for (a malformed one gets the usage, as anyone may)."""
    if command == "status" and not args:
        return status_reply
    if command == "dlq" and not args:
        return lambda: dlq_reply(chat=chat)
    if command == "worker" and len(args) == 1:
        return lambda: worker_reply(args[0], chat=chat)
    if command == "task" and len(args) == 1:
        return lambda: task_reply(args[0], chat=chat)
    return None


def _one_task(command: str, args: list[str], text: str, who: dict) -> Reply | None:
    """merge <id>, rework <id> <comment>, rebase <id> [<comment>]: the comment as typed."""
    if command == "merge" and len(args) == 1:  # retry, approve, cancel: MULTI_ACTIONS
        return _act(command, args[0].lstrip("#"), **who)
    if command == "rework":
        if len(args) < 2:
            return help_reply(ok=False, prefix="Say what should change: rework <id> <comment>.")
        return _act(command, args[0].lstrip("#"), comment=_after_words(text, 2), **who)
    if command == "rebase" and args:
        return _act(command, args[0].lstrip("#"), comment=_after_words(text, 2), **who)
    return None


def _change(command: str, args: list[str], text: str, who: dict) -> Reply | None:
    """The reply of a line that acts on tasks or workers, or None when it is not one."""
    if command in ("merge", "rework", "rebase"):
        return _one_task(command, args, text, who)
    if command in MULTI_ACTIONS and 1 <= len(args) <= MAX_IDS_PER_LINE:
        return act_many(command, args, **who)
    if command in actions.WORKER_ACTIONS and len(args) == 1:
        return act_on_worker(command, args[0], **who)
    if command == "submit":
        return submit_reply(_after_words(text, 1), **who)
    return None


def _execute(text: str, *, user, actor: str, door: str, trusted: bool) -> Reply:
    # NUL is never part of an id, and PostgreSQL refuses it in a query.
    words = (text or "").replace("\x00", "").split()
    if not words or words[0].lower() in ("help", "?"):
        return help_reply()
    command, args = words[0].lower(), words[1:]
    read = _read(command, args, chat=door != "cli")
    if read is not None:
        if not trusted and not may_read(user):
            return _read_refusal(command, user=user, actor=actor, door=door)
        return read()
    who = {"user": user, "actor": actor, "door": door, "trusted": trusted}
    reply = _change(command, args, text, who)
    if reply is None:
        return help_reply(ok=False, prefix=f"I don't understand {' '.join(words)[:80]!r}.")
    return reply


def execute_button(action: str, task_id: str, *, user, actor: str, door: str) -> Reply:
    """A chat button click: the same checks as typing the command."""
    if action not in ("retry", "approve", "merge", "rebase"):
        return _refusal(f"unknown button {action!r}")
    return for_chat(_act(action, str(task_id), user=user, actor=actor, door=door, trusted=False))
