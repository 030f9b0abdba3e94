"""The grammar's read-only commands: status, dlq, worker and task, for chat and the CLI."""

from __future__ import annotations

from django.db.models import Count, Q, Sum

from tasks_app.ages import ago
from tasks_app.choices import Status, error_hint
from tasks_app.lifecycle import TaskNotFound, intake
from tasks_app.models import Task
from workers_app.models import Worker, WorkerStatus, stale_cutoff

from .replies import (
    CHAT_NOTE_PREVIEW,
    DLQ_LIMIT,
    ERROR_PREVIEW,
    SILENT_SHOWN,
    Button,
    Reply,
    _iso,
    _preview,
    _refusal,
    _shown,
)


def status_reply() -> Reply:
    """Workers by lane and tasks by status, like the seed's `/vibe status`.

    "Online" is a fresh heartbeat (and asking for work), whatever the status column says; a
    worker whose column says online, paused or draining but that has gone silent is named as
    "offline (no heartbeat for …)". Retired workers are left out.
    """
    alive = Q(last_heartbeat__gte=stale_cutoff())
    pool = Worker.objects.in_pool()
    lanes = (
        pool.values("lane")
        .annotate(
            count=Count("pk"),
            online=Count("pk", filter=alive & Q(status=WorkerStatus.ONLINE)),
            load=Sum("active_tasks", filter=alive),
            capacity=Sum("capacity_limit", filter=alive & Q(status=WorkerStatus.ONLINE)),
        )
        .order_by("lane")
    )
    silent = list(
        pool.exclude(alive)
        .exclude(status=WorkerStatus.OFFLINE)
        .order_by("lane", "worker_id")[: SILENT_SHOWN + 1]
    )
    counts = dict(
        Task.objects.values("status").annotate(n=Count("pk")).order_by().values_list("status", "n")
    )
    workers = [
        {
            "lane": row["lane"],
            "workers": row["count"],
            "online": row["online"],
            "active": row["load"] or 0,
            "capacity": row["capacity"] or 0,
        }
        for row in lanes
    ]
    tasks = {s.value: counts.get(s.value, 0) for s in Status}
    lines = ["Workers:"]
    lines += [
        f"  • {w['lane']}: {w['workers']} ({w['online']} online, "
        f"{w['active']}/{w['capacity']} busy)"
        for w in workers
    ] or ["  • none"]
    if silent:
        lines.append("Not running (no fresh heartbeat):")
        lines += [f"  • {w.pk}: {w.liveness_text}, set {w.status}" for w in silent[:SILENT_SHOWN]]
        if len(silent) > SILENT_SHOWN:
            lines.append("  • … and more: see the pool page")
    lines.append("Tasks:")
    lines += [f"  • {Status(s).label.lower()}: {n}" for s, n in tasks.items() if n] or ["  • none"]
    data = {
        "ok": True,
        "workers": workers,
        "silent_workers": [
            {"worker_id": w.pk, "status": w.status, "shown_as": w.liveness_text}
            for w in silent[:SILENT_SHOWN]
        ],
        "tasks": tasks,
    }
    return Reply(ok=True, title="Vibe status", lines=lines, data=data, public=True)


def dlq_reply(limit: int = DLQ_LIMIT, *, chat: bool = False) -> Reply:
    total = Task.objects.dead_letter().count()
    rows = list(
        Task.objects.dead_letter().only(
            "id", "goal", "lane", "last_error_type", "attempt_count", "created_at"
        )[:limit]
    )
    items = [
        {
            "id": t.pk,
            "goal": t.goal,
            "lane": t.lane,
            "error_type": t.last_error_type,
            "attempts": t.attempt_count,
            "created_at": _iso(t.created_at),
        }
        for t in rows
    ]
    if not total:
        return Reply(
            ok=True,
            title="The dead-letter queue is empty",
            lines=[],
            data={"ok": True, "total": 0, "tasks": []},
        )
    lines = [
        f"  • #{t.pk} ({t.lane}) {_preview(t.goal, for_chat=chat)} — "
        f"{t.last_error_type or 'error'}, "
        f"{t.attempt_count} attempt{'s' if t.attempt_count != 1 else ''}"
        for t in rows
    ]
    if total > len(rows):
        lines.append(f"  … and {total - len(rows)} more")
    return Reply(
        ok=True,
        title=f"{total} dead-letter task{'s' if total != 1 else ''}",
        lines=lines,
        data={"ok": True, "total": total, "tasks": items},
        buttons=[Button("retry", t.pk, f"Retry #{t.pk}") for t in rows[:5]],
    )


def worker_reply(worker_id: str, *, chat: bool = False) -> Reply:
    worker_id = worker_id.strip()
    worker = Worker.objects.filter(pk=worker_id).first()
    if worker is None and not worker_id.startswith("@"):
        worker = Worker.objects.filter(pk="@" + worker_id).first()
    if worker is None:
        return _refusal(f"worker {worker_id} does not exist; `status` lists the lanes")
    current = list(
        Task.objects.filter(worker_id=worker.pk, status=Status.IN_PROGRESS)
        .order_by("started_at")
        .only("id", "goal", "started_at")
    )
    data = {
        "ok": True,
        "worker_id": worker.pk,
        "lane": worker.lane,
        "tier": worker.tier,
        "status": worker.status,
        "display_status": worker.display_status,
        "shown_as": worker.liveness_text,
        "alive": worker.is_alive,
        "retired": worker.is_retired,
        "managed": worker.managed,
        "active_tasks": worker.active_tasks,
        "capacity_limit": worker.capacity_limit,
        "priority_score": worker.priority_score,
        "last_heartbeat": _iso(worker.last_heartbeat),
        "current_tasks": [{"id": t.pk, "goal": t.goal} for t in current],
    }
    lines = [
        f"lane {worker.lane}, tier {worker.tier}, {worker.liveness_text}"
        + (f" (set to {worker.status})" if worker.display_status != worker.status else "")
        + ("" if worker.managed else ", a one-off (runfactory does not start it)"),
        f"load {worker.active_tasks}/{worker.capacity_limit}, "
        f"heartbeat {ago(worker.last_heartbeat)}",
    ]
    lines += [
        f"  • #{t.pk} {_preview(t.goal, for_chat=chat)} (since {ago(t.started_at)})"
        for t in current
    ]
    return Reply(ok=True, title=f"Worker {worker.pk}", lines=lines, data=data)


def task_reply(task_id: str, *, chat: bool = False) -> Reply:
    try:
        pk = intake.task_id(str(task_id).lstrip("#"))
    except TaskNotFound as exc:  # not a number, or one no task could have
        return _refusal(str(exc))
    task = Task.objects.filter(pk=pk).first()
    if task is None:
        return _refusal(f"task {pk} does not exist")
    history = list(task.history.all())
    data = _task_data(task, history)
    data["waiting_for"] = [pk for pk, _ in task.stuck_prerequisites()]
    lines = _task_lines(task, chat=chat)
    lines.append("History:")
    note_limit = CHAT_NOTE_PREVIEW if chat else None
    lines += [
        f"  {h.created_at:%Y-%m-%d %H:%M:%S} {h.from_status or '—'} → {h.to_status} "
        f"by {h.actor}" + (f": {_shown(h.note, note_limit, for_chat=chat)}" if h.note else "")
        for h in history
    ]
    return Reply(
        ok=True, title=f"Task #{task.pk}", lines=lines, data=data, buttons=_task_buttons(task)
    )


def _task_data(task: Task, history: list) -> dict:
    return {
        "ok": True,
        "id": task.pk,
        "goal": task.goal,
        "lane": task.lane,
        "status": task.status,
        "priority": task.priority,
        "risk": task.risk,
        "worker_id": task.worker_id,
        "attempt_count": task.attempt_count,
        "max_attempts": task.max_attempts,
        "last_error_type": task.last_error_type,
        "last_error": task.last_error,
        "hint": error_hint(task.last_error_type),
        "parent_id": task.parent_id,
        "verdict": task.verdict,
        "score": task.score,
        "findings": task.findings,
        "delivery": task.delivery,
        "delivery_state": task.delivery_state,
        "base_branch": task.base_branch,
        "conflicts": list(task.conflicts or []),
        "merge_commit": task.merge_commit,
        "pr_url": task.pr_url,
        "pr_number": task.pr_number,
        "pr_state": task.pr_state,
        "github_issue": task.github_issue,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "history": [
            {
                "from": h.from_status,
                "to": h.to_status,
                "actor": h.actor,
                "note": h.note,
                "at": _iso(h.created_at),
            }
            for h in history
        ],
    }


def _task_lines(task: Task, *, chat: bool) -> list[str]:
    """The task's goal, state, error, wait, delivery and verdict, as the reply shows them."""
    lines = [
        _shown(task.goal, None, for_chat=chat),
        f"lane {task.lane} · {Status(task.status).label.lower()} · priority {task.priority} · "
        f"risk {task.risk} · attempts {task.attempt_count}/{task.max_attempts}"
        + (f" · worker {task.worker_id}" if task.worker_id else ""),
    ]
    if task.last_error_type:
        error = _shown(task.last_error, ERROR_PREVIEW, for_chat=chat)
        lines.append(f"last error: {task.last_error_type}: {error}")
        hint = error_hint(task.last_error_type)
        if hint:
            lines.append(f"hint: {hint}")
    waiting = task.waiting_summary
    if waiting:
        lines.append(f"{waiting}: it cannot start until a person retries or replaces those")
    return lines + _delivery_lines(task) + _verdict_lines(task, chat=chat)


def _delivery_lines(task: Task) -> list[str]:
    if not (task.delivery_state or (task.branch and not task.is_review)):
        return []
    summary = task.delivery_summary or "not yet"
    lines = [
        f"delivery: {task.get_delivery_display().lower()} — {summary}"
        + (f" — {task.pr_url}" if task.pr_url else "")
    ]
    if task.conflicts:
        lines.append(f"conflicts in: {', '.join(task.conflicts[:20])}")
    return lines


def _verdict_lines(task: Task, *, chat: bool) -> list[str]:
    if not task.verdict:
        return []
    note_limit = CHAT_NOTE_PREVIEW if chat else None
    score = f" (score {task.score})" if task.score is not None else ""
    return [f"verdict: {task.verdict}{score}"] + [
        f"  • {f['severity']}: {_shown(str(f['title']), note_limit, for_chat=chat)}"
        for f in task.findings
    ]


def _task_buttons(task: Task) -> list[Button]:
    """The buttons a chat reply offers for the task as it is now."""
    buttons = []
    if task.status == Status.AWAITING_APPROVAL:
        buttons.append(Button("approve", task.pk, f"Approve #{task.pk}"))
    if task.status in (Status.DEAD_LETTER, Status.BLOCKED):
        buttons.append(Button("retry", task.pk, f"Retry #{task.pk}"))
    if task.status == Status.REVIEW_NEEDED and task.delivery == "merge":
        if task.delivery_state == "awaiting_merge":
            buttons.append(Button("merge", task.pk, f"Merge #{task.pk}"))
        elif task.delivery_state == "conflict":
            buttons.append(Button("rebase", task.pk, f"Rebase and rework #{task.pk}"))
    return buttons
