"""People's moves: submit, approve, edit, ask for changes, retry, cancel, give an attempt back.

They run at human speed, so each writes with the ORM's compare-and-swap (`moves.move`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from django.conf import settings
from django.db import IntegrityError, connection
from django.utils import timezone

from .. import actors, sqlite
from ..choices import (
    INFRASTRUCTURE_ERRORS,
    OPEN_STATUSES,
    WAITING_DELIVERY,
    Delivery,
    DeliveryState,
    Risk,
    Status,
)
from ..models import Task, TaskHistory
from .errors import IllegalTransition, InvalidInput, TaskNotFound, illegal, status_label
from .intake import NewTask, check_actor, validate_new
from .moves import after_status, load, move, notify_people, release_worker_slot
from .reviews import review_cancelled

CANCEL_CHANNEL = "vibe_cancels"  # the id of a cancelled running task, for its worker's keeper


def create(spec: NewTask, *, actor: str) -> Task:
    if spec.key:
        earlier = Task.objects.filter(idempotency_key=spec.key).first()
        if earlier is not None:
            earlier.was_submitted_before = True
            return earlier
    status = Status.AWAITING_APPROVAL if spec.risk == Risk.HIGH else Status.PENDING
    task = Task.objects.create(
        idempotency_key=spec.key,
        goal=spec.goal,
        lane=spec.lane,
        priority=spec.priority,
        risk=spec.risk,
        pipeline=spec.pipeline or "none",
        max_attempts=spec.max_attempts or settings.VIBE_MAX_ATTEMPTS,
        status=status,
        delivery=spec.delivery or Delivery.BRANCH,
        github_issue=spec.github_issue,
    )
    if spec.depends_on:
        ids = {int(i) for i in spec.depends_on}
        found = dict(Task.objects.filter(pk__in=ids).values_list("pk", "status"))
        missing = sorted(ids - set(found))
        if missing:
            raise TaskNotFound(f"task {missing[0]} does not exist (named in --after)")
        cancelled = sorted(pk for pk, status in found.items() if status == Status.CANCELLED)
        if cancelled:
            raise InvalidInput(
                f"task {cancelled[0]} is cancelled and will never complete, so nothing can wait "
                "for it (named in --after)"
            )
        task.depends_on.set(ids)
    note = "submitted" if status == Status.PENDING else "submitted; high risk, awaiting approval"
    TaskHistory.objects.create(
        task=task, from_status="", to_status=status, actor=actor, note=note, event="submitted"
    )
    after_status(task, status, note)
    return task


def submit(
    goal: str,
    *,
    lane: str,
    actor: str,
    priority: int = 50,
    risk: str = Risk.LOW,
    depends_on: Sequence[int] = (),
    pipeline: str | None = None,
    max_attempts: int | None = None,
    delivery: str | None = None,
    github_issue: str = "",
    key: str = "",
) -> Task:
    """New work: `pending`, or `awaiting_approval` when its risk is high.

    With an idempotency `key` already used, nothing is made: the earlier task is returned, its
    `was_submitted_before` set, so a retried submission never makes the work twice.
    """
    actor = check_actor(actor)
    spec = validate_new(
        NewTask(
            goal,
            lane,
            priority,
            risk,
            depends_on,
            pipeline,
            max_attempts,
            delivery,
            github_issue,
            key,
        )
    )
    try:
        with sqlite.atomic():
            return create(spec, actor=actor)
    except IntegrityError:
        # Another process submitted the same key between our look and our insert.
        earlier = Task.objects.filter(idempotency_key=spec.key).first() if spec.key else None
        if earlier is None:
            raise
        earlier.was_submitted_before = True
        return earlier


def submit_many(
    specs: Iterable[NewTask],
    *,
    actor: str,
    progress: Callable[[int, int], None] | None = None,
) -> list[Task]:
    """All or nothing: every spec is validated before the first row is written."""
    actor = check_actor(actor)
    validated = []
    for number, spec in enumerate(specs, start=1):
        try:
            validated.append(validate_new(spec))
        except InvalidInput as exc:
            raise InvalidInput(f"item {number}: {exc}") from None
    created = []
    with sqlite.atomic():
        for spec in validated:
            created.append(create(spec, actor=actor))
            if progress:
                progress(len(created), len(validated))
    return created


def approve(task_id: int | str, *, actor: str) -> Task:
    actor = check_actor(actor)
    with sqlite.atomic():
        task = load(task_id)
        if task.status != Status.AWAITING_APPROVAL:
            raise illegal(task, "approved", [Status.AWAITING_APPROVAL])
        now = timezone.now()
        return move(
            task,
            Status.AWAITING_APPROVAL,
            actor=actor,
            event="approved",
            note="approved",
            status=Status.PENDING,
            approved_by=actor,
            approved_at=now,
        )


EDITABLE = (Status.PENDING, Status.AWAITING_APPROVAL, Status.BLOCKED, Status.DEAD_LETTER)


def edit(
    task_id: int | str, *, actor: str, goal: str | None = None, priority: int | None = None
) -> Task:
    """A person changes what the work is (goal) or how urgent (priority), with a history row.

    An approval covers the goal that was approved: a new goal for a high-risk or approved task
    sends it back for approval. Running and finished work cannot be edited.
    """
    actor = check_actor(actor)
    with sqlite.atomic():
        task = load(task_id)
        if task.status not in EDITABLE:
            raise illegal(task, "edited", EDITABLE)
        spec = validate_new(
            NewTask(
                goal if goal is not None else task.goal,
                task.lane,
                priority if priority is not None else task.priority,
                task.risk,
                pipeline=task.pipeline,
                delivery=task.delivery,
            )
        )
        fields: dict = {}
        said = []
        if spec.goal != task.goal:
            fields["goal"] = spec.goal
            said.append(f"goal {task.goal[:300]!r} → {spec.goal[:300]!r}")
        if spec.priority != task.priority:
            fields["priority"] = spec.priority
            said.append(f"priority {task.priority} → {spec.priority}")
        if not fields:
            return task
        status = task.status
        if "goal" in fields and (task.risk == Risk.HIGH or task.approved_by):
            status = Status.AWAITING_APPROVAL  # the approval was for the old goal
            fields.update(approved_by="", approved_at=None)
            said.append("needs approval again")
        return move(
            task,
            task.status,
            actor=actor,
            event="edited",
            note=("edited: " + "; ".join(said))[:2000],
            status=status,
            **fields,
        )


MAX_COMMENT_LENGTH = 4000
# Where a person may ask for changes: work waiting to be merged, delivered work, blocked work.
REWORKABLE = (Status.REVIEW_NEEDED, Status.COMPLETED, Status.BLOCKED)


def request_changes(
    task_id: int | str, *, comment: str, actor: str, findings: Sequence[dict] | None = None
) -> Task:
    """A person (or a GitHub review) asks for changes: a rework round on the same branch.

    The comment is the first finding, before any file-and-line ones; the builder resumes its
    session with them. The round is the person's: it does not count against the review limit.
    """
    actor = check_actor(actor)
    comment = (comment or "").strip() if isinstance(comment, str) else ""
    if not comment and not findings:
        raise InvalidInput("say what should change: the comment is empty")
    if len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidInput(
            f"the comment is {len(comment)} characters; the limit is {MAX_COMMENT_LENGTH}"
        )
    with sqlite.atomic():
        task = load(task_id)
        if task.is_review:
            raise IllegalTransition(
                f"task {task.pk} is a review; ask for changes on the work it reviews "
                f"(task #{task.parent_id})"
            )
        waiting = task.status == Status.REVIEW_NEEDED and task.delivery_state in WAITING_DELIVERY
        done = task.status == Status.COMPLETED and task.delivery_state != DeliveryState.MERGED
        if not (waiting or done or task.status == Status.BLOCKED):
            if task.status == Status.COMPLETED:
                raise IllegalTransition(
                    f"task {task.pk} is already merged; submit a new task for further changes"
                )
            raise IllegalTransition(
                f"task {task.pk} is {status_label(task.status)}; changes can be asked for on "
                "work awaiting merge, delivered but not merged, or blocked"
            )
        by = actors.name_of(actor)
        asked: list[dict[str, object]] = []
        if comment:
            asked.append(
                {
                    "severity": "HIGH",
                    "title": comment.splitlines()[0][:300],
                    "detail": comment,
                    "source": actor,
                }
            )
        for item in findings or ():
            if isinstance(item, dict) and (item.get("title") or item.get("detail")):
                asked.append(
                    {
                        "severity": str(item.get("severity") or "MEDIUM").upper()[:10],
                        "title": str(item.get("title") or item.get("detail"))[:300],
                        "detail": str(item.get("detail") or "")[:4000],
                        "file": str(item.get("file") or "")[:1000],
                        "line": item["line"] if isinstance(item.get("line"), int) else None,
                        "source": actor,
                    }
                )
        new_round = task.review_round + 1
        context = {
            **(task.context or {}),
            "findings": asked,
            "failed_reviews": [],
            "summaries": [f"Changes requested by {by}"],
            "round_base": new_round,
            "changes_requested_by": actor,
        }
        where = "" if not task.pr_number else f" (pull request #{task.pr_number} stays open)"
        return move(
            task,
            task.status,
            actor=actor,
            event="changes_requested",
            note=f"changes requested: {comment or asked[0]['title']}"[:1900] + where,
            status=Status.PENDING,
            review_round=new_round,
            pipeline_step=0,
            context=context,
            worker_id=None,
            attempt_count=0,
            not_before=None,
            finished_at=None,
            delivery_state=DeliveryState.NONE,
            conflicts=[],
            last_error_type="",
            last_error="",
        )


# --- People's moves ---------------------------------------------------------------------------


def retry(task_id: int | str, *, actor: str) -> Task:
    """A person sends a dead-letter or blocked task back to work with fresh attempts."""
    actor = check_actor(actor)
    with sqlite.atomic():
        task = load(task_id)
        allowed = [Status.DEAD_LETTER, Status.BLOCKED]
        if task.status not in allowed:
            raise illegal(task, "retried", allowed)
        if task.delivery_state == DeliveryState.FAILED:  # reviews passed; only delivery failed
            if not settings.VIBE_GITHUB_TOKEN:
                raise InvalidInput(
                    f"task {task.pk} waits for a pull request, but VIBE_GITHUB_TOKEN is not "
                    "set; set it, then retry"
                )
            return move(
                task,
                Status.BLOCKED,
                actor=actor,
                event="retried",
                note="retried; opening the pull request again",
                status=Status.REVIEW_NEEDED,
                delivery_state=DeliveryState.OPENING_PR,
                last_error_type="",
                last_error="",
            )
        fields: dict = {}
        if not task.is_review:
            # A fresh round id, so reviews of earlier rounds never count for the new one.
            fields = {
                "review_round": task.review_round + 1,
                "context": {**(task.context or {}), "round_base": task.review_round + 1},
                "pipeline_step": 0,
                "delivery_state": DeliveryState.NONE,
                "conflicts": [],
            }
        return move(
            task,
            allowed,
            actor=actor,
            event="retried",
            note="retried; attempts reset",
            status=Status.PENDING,
            attempt_count=0,
            not_before=None,
            worker_id=None,
            **fields,
        )


def cancel(task_id: int | str, *, actor: str) -> Task:
    """Stop a task for good; open reviews of it are cancelled too."""
    actor = check_actor(actor)
    with sqlite.atomic():
        task = load(task_id, lock=False)
        # A review: lock the work it reviews first, the order complete() uses, so they never
        # deadlock; then the review itself.
        parent = load(task.parent_id) if task.parent_id else None
        task = load(task.pk)
        if task.status not in OPEN_STATUSES:
            raise illegal(task, "cancelled", OPEN_STATUSES)
        _cancel_one(task, actor=actor, note="cancelled")
        for child in task.children.filter(status__in=OPEN_STATUSES).select_for_update():
            _cancel_one(child, actor=actor, note=f"cancelled with task #{task.pk}")
        if parent is not None:
            review_cancelled(parent, task, actor=actor)
        _tell_who_waits(task)
        return task


def _cancel_one(task: Task, *, actor: str, note: str) -> None:
    """Cancel one task; a running one's agent is stopped and its worker's slot given back."""
    held_by = task.worker_id if task.status == Status.IN_PROGRESS else None
    if held_by:
        _stop_agent_of(task)
    move(
        task,
        task.status,
        actor=actor,
        event="cancelled",
        note=note,
        status=Status.CANCELLED,
        lease_expires_at=None,
        finished_at=timezone.now(),
    )
    release_worker_slot(held_by)


def _tell_who_waits(task: Task) -> None:
    """Work that waited for a cancelled task can never start: people hear it, per task."""
    waiting = task.dependents.filter(status__in=(Status.PENDING, Status.AWAITING_APPROVAL))
    for dependant in waiting.order_by("pk")[:10]:
        notify_people(
            dependant,
            Status.BLOCKED,
            f"waiting for #{task.pk} (cancelled): it cannot start; cancel it, or submit it "
            "again without that prerequisite",
        )


def _stop_agent_of(task: Task) -> None:
    """Tell the worker running the task, at commit, to stop its agent now (PostgreSQL NOTIFY;
    elsewhere its keeper sees the cancel within about a second)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CANCEL_CHANNEL, str(task.pk)])


def give_back_attempt(task_id: int | str, *, actor: str, reason: str) -> Task:
    """Undo an attempt a broken worker spent: the fault was the worker's, not the task's.

    Only a task whose current state is that worker-side failure moves (dead letter, or pending
    waiting for its retry), so a task a person has retried or cancelled since stays as it is.
    """
    actor = check_actor(actor)
    with sqlite.atomic():
        task = load(task_id)
        allowed = (Status.DEAD_LETTER, Status.PENDING)
        if task.status not in allowed or task.last_error_type not in INFRASTRUCTURE_ERRORS:
            raise illegal(task, "given its attempt back", allowed)
        return move(
            task,
            task.status,
            actor=actor,
            event="attempt_given_back",
            note=f"attempt given back: {reason}"[:2000],
            status=Status.PENDING,
            attempt_count=max(task.attempt_count - 1, 0),
            not_before=None,
            worker_id=None,
        )
