"""Tasks and their history, on the seed's tables (`tasks`, `task_history`).

Column names are the seed's so its SQL keeps working; columns a raw INSERT may leave out carry
database defaults. Nothing here assigns `status`: every change goes through `lifecycle`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Now
from django.urls import reverse
from django.utils import timezone

from .choices import (
    OPEN_STATUSES,
    Delivery,
    DeliveryState,
    Lane,
    Risk,
    Status,
    Verdict,
)


class TaskQuerySet(models.QuerySet):
    def open(self) -> TaskQuerySet:
        return self.filter(status__in=OPEN_STATUSES)

    def claimable(self, lane: str, now: datetime | None = None) -> TaskQuerySet:
        """Pending tasks of a lane that may start now: past their backoff, prerequisites done."""
        unfinished_prerequisite = Task.depends_on.through.objects.filter(
            from_task_id=OuterRef("pk")
        ).exclude(to_task__status=Status.COMPLETED)
        not_before_ok = Q(not_before__isnull=True) | Q(not_before__lte=now or Now())
        return (
            self.filter(status=Status.PENDING, lane=lane)
            .filter(not_before_ok)
            .filter(~Exists(unfinished_prerequisite))
            .order_by("-priority", "created_at", "id")
        )

    def dead_letter(self) -> TaskQuerySet:
        """The dead-letter queue as every door lists it: newest first."""
        return self.filter(status=Status.DEAD_LETTER).order_by("-created_at", "-id")

    def expired_leases(self, now: datetime) -> TaskQuerySet:
        return self.filter(status=Status.IN_PROGRESS, lease_expires_at__lt=now)


class Task(models.Model):
    goal = models.TextField()
    lane = models.CharField(max_length=20, choices=Lane.choices)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING, db_default=Status.PENDING
    )
    priority = models.IntegerField(
        default=50, db_default=50, help_text="Higher runs first (0–100 by convention)."
    )
    risk = models.CharField(
        max_length=10, choices=Risk.choices, default=Risk.LOW, db_default=Risk.LOW
    )
    worker = models.ForeignKey(
        "workers_app.Worker",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        db_column="worker_id",
        # tasks_worker_idx (worker, status) serves lookups by worker; a second index on the
        # column would only cost every claim another write.
        db_index=False,
    )
    attempt_count = models.IntegerField(default=0, db_default=0)
    max_attempts = models.IntegerField(default=3, db_default=3)
    last_error_type = models.CharField(max_length=40, blank=True, default="", db_default="")
    last_error = models.TextField(blank=True, default="", db_default="")

    # Pipeline: a review or QA task points at the work it reviews.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    stage = models.CharField(
        max_length=20,
        blank=True,
        default="",
        db_default="",
        help_text="Empty for building work; 'review' or 'qa' for tasks the pipeline spawned.",
    )
    pipeline = models.CharField(max_length=20, blank=True, default="", db_default="")
    pipeline_step = models.IntegerField(default=0, db_default=0)
    review_round = models.IntegerField(default=0, db_default=0)
    context = models.JSONField(
        default=dict,
        db_default=models.Value({}, output_field=models.JSONField()),
        blank=True,
        help_text="Findings from a failed review, for the rework.",
    )
    depends_on = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="dependents"
    )

    # Claims: a lease and a fencing token, so a worker that lost its lease cannot write.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.IntegerField(default=0, db_default=0)
    not_before = models.DateTimeField(null=True, blank=True)

    approved_by = models.CharField(max_length=150, blank=True, default="", db_default="")
    approved_at = models.DateTimeField(null=True, blank=True)

    result = models.JSONField(
        default=dict, db_default=models.Value({}, output_field=models.JSONField()), blank=True
    )
    verdict = models.CharField(
        max_length=4, choices=Verdict.choices, blank=True, default="", db_default=""
    )
    score = models.IntegerField(null=True, blank=True)
    branch = models.CharField(max_length=200, blank=True, default="", db_default="")
    head_commit = models.CharField(max_length=64, blank=True, default="", db_default="")
    diff_stat = models.TextField(blank=True, default="", db_default="")

    # Delivery: how the work reaches the team, and how far it got.
    delivery = models.CharField(
        max_length=20, choices=Delivery.choices, default=Delivery.BRANCH, db_default="branch"
    )
    delivery_state = models.CharField(
        max_length=20, choices=DeliveryState.choices, blank=True, default="", db_default=""
    )
    base_branch = models.CharField(max_length=200, blank=True, default="", db_default="")
    merge_commit = models.CharField(max_length=64, blank=True, default="", db_default="")
    # Files the branch conflicts in with its base, as last checked ([] = merges cleanly).
    conflicts = models.JSONField(
        default=list, db_default=models.Value([], output_field=models.JSONField()), blank=True
    )
    pr_url = models.CharField(max_length=500, blank=True, default="", db_default="")
    pr_number = models.IntegerField(null=True, blank=True)
    pr_state = models.CharField(max_length=20, blank=True, default="", db_default="")
    # The GitHub issue the task came from, "owner/repo#123" ("" for none).
    github_issue = models.CharField(max_length=300, blank=True, default="", db_default="")
    # The submitter's own name for this piece of work: a second submission with it is this task.
    idempotency_key = models.CharField(max_length=200, blank=True, default="", db_default="")

    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    # Set on the board's cards by `stages.attach_stages`, for the templates; not columns.
    stages: list[Any]
    stages_key: tuple[Any, ...]
    _stuck_prerequisites: list[tuple[int, str]]

    class Meta:
        db_table = "tasks"
        ordering = ["-priority", "created_at"]
        indexes = [
            models.Index(
                # In claim order to the last key (id), so PostgreSQL needs no sort either.
                fields=["lane", "-priority", "created_at", "id"],
                condition=Q(status="pending"),
                name="tasks_claimable_idx",
            ),
            models.Index(fields=["status", "updated_at"], name="tasks_status_idx"),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="in_progress"),
                name="tasks_lease_idx",
            ),
            models.Index(fields=["worker", "status"], name="tasks_worker_idx"),
            models.Index(
                fields=["delivery_state"],
                condition=Q(delivery_state__in=["opening_pr", "awaiting_merge", "conflict"]),
                name="tasks_delivery_waiting_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(attempt_count__gte=0), name="tasks_attempt_count_non_negative"
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="tasks_max_attempts_pos"),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in Status]), name="tasks_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(delivery__in=[d.value for d in Delivery]), name="tasks_delivery_valid"
            ),
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="tasks_idempotency_key_unique",
            ),
        ]
        permissions = [
            ("approve_task", "Can approve a high-risk task"),
            ("retry_task", "Can retry a dead-letter or blocked task"),
            ("cancel_task", "Can cancel a task"),
            ("merge_task", "Can merge a task's branch into its base"),
            ("rework_task", "Can ask for changes to a task's work"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.goal[:60]}"

    def get_absolute_url(self) -> str:
        return reverse("tasks_app:task_detail", args=[self.pk])

    @property
    def delivery_summary(self) -> str:
        """How far delivery got, in a few words for cards, pages, chat and the CLI."""
        state, base = self.delivery_state, self.base_branch or "its base"
        pr = f"pull request #{self.pr_number}" if self.pr_number else "pull request"
        files = len(self.conflicts or [])
        summaries: dict[str, str] = {
            DeliveryState.COMMITTED: "committed on its branch",
            DeliveryState.PUSHED: "branch pushed",
            DeliveryState.OPENING_PR: "opening a pull request",
            DeliveryState.AWAITING_MERGE: f"{pr} open"
            if self.pr_number
            else f"awaiting merge into {base}",
            DeliveryState.CONFLICT: f"conflicts with {base} in {files} file"
            + ("" if files == 1 else "s"),
            DeliveryState.MERGED: f"merged into {base}"
            + (f" as {self.merge_commit[:12]}" if self.merge_commit else ""),
            DeliveryState.PR_CLOSED: f"{pr} closed without merging",
            DeliveryState.FAILED: "the pull request could not be opened",
        }
        return summaries.get(state, "")

    @property
    def findings(self) -> list[dict]:
        return list(self.result.get("findings") or []) if isinstance(self.result, dict) else []

    @property
    def is_review(self) -> bool:
        return bool(self.stage)

    def stuck_prerequisites(self) -> list[tuple[int, str]]:
        """Prerequisites that will not complete without a person: (id, status label).

        A task waiting for one of these would wait forever; cards, chat and the CLI say so.
        """
        if self.status not in (Status.PENDING, Status.AWAITING_APPROVAL):
            return []
        if "_stuck_prerequisites" in self.__dict__:  # read for a whole board at once
            return self.__dict__["_stuck_prerequisites"]
        stuck = (Status.CANCELLED, Status.DEAD_LETTER, Status.BLOCKED)
        rows = self.depends_on.filter(status__in=stuck).order_by("pk").values_list("pk", "status")
        return [(pk, Status(status).label.lower()) for pk, status in rows]

    @property
    def waiting_summary(self) -> str:
        """'waiting for #4 (dead letter), #9 (cancelled)', or ''."""
        stuck = self.stuck_prerequisites()
        return (
            ("waiting for " + ", ".join(f"#{pk} ({label})" for pk, label in stuck)) if stuck else ""
        )


class TaskHistory(models.Model):
    """One row per status change. Append-only: written by `lifecycle`, never edited."""

    # No index of its own: task_history_task_idx (task, created_at) serves every lookup by task,
    # and each status change would otherwise write one more index page.
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="history", db_index=False)
    from_status = models.CharField(max_length=20, blank=True, default="", db_default="")
    to_status = models.CharField(max_length=20)
    actor = models.CharField(max_length=200)
    note = models.TextField(blank=True, default="", db_default="")
    # What the move was ("submitted", "claimed", "failed", "retried"…), and the error type it
    # recorded: what the charts count, so no reader parses the note's wording.
    event = models.CharField(max_length=30, blank=True, default="", db_default="")
    error_type = models.CharField(max_length=40, blank=True, default="", db_default="")
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        db_table = "task_history"
        ordering = ["created_at", "id"]
        verbose_name_plural = "task history"
        indexes = [
            models.Index(fields=["task", "created_at"], name="task_history_task_idx"),
            models.Index(fields=["created_at"], name="task_history_time_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.task_id} {self.from_status or '∅'} → {self.to_status} by {self.actor}"


class Run(models.Model):
    """One agent run, kept like a build log so a person can read why a task failed."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    worker = models.ForeignKey(
        "workers_app.Worker",
        null=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        db_column="worker_id",
    )
    attempt = models.IntegerField(default=1)
    agent = models.CharField(max_length=60, blank=True, default="")
    argv = models.JSONField(default=list)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    stdout_tail = models.TextField(blank=True, default="")
    stderr_tail = models.TextField(blank=True, default="")
    outcome = models.CharField(
        max_length=40, blank=True, default="", help_text="completed, released or an error type."
    )
    # What kind of run, and where: the adapter's kind, builder or reviewer, the sandbox mode.
    kind = models.CharField(max_length=20, blank=True, default="", db_default="")
    role = models.CharField(max_length=10, blank=True, default="", db_default="")
    sandbox = models.CharField(max_length=10, blank=True, default="", db_default="")
    note = models.TextField(
        blank=True, default="", db_default="", help_text="What the worker did around the run."
    )
    # What the agent reported: its session (to resume), model, usage and cost.
    session_id = models.CharField(max_length=200, blank=True, default="", db_default="")
    resumed = models.BooleanField(default=False, db_default=False)
    model = models.CharField(max_length=100, blank=True, default="", db_default="")
    input_tokens = models.BigIntegerField(null=True, blank=True)
    output_tokens = models.BigIntegerField(null=True, blank=True)
    cache_read_tokens = models.BigIntegerField(null=True, blank=True)
    cache_write_tokens = models.BigIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    turns = models.IntegerField(null=True, blank=True)
    # The change a builder run left (after the worker's commit), for reviewers and people.
    base_commit = models.CharField(max_length=64, blank=True, default="", db_default="")
    head_commit = models.CharField(max_length=64, blank=True, default="", db_default="")
    changed_files = models.JSONField(
        default=list,
        db_default=models.Value([], output_field=models.JSONField()),
        blank=True,
        help_text='[{"path": …, "added": n, "removed": n}], binary files with null counts.',
    )
    # The unified diff base..head, stored when the run ends: the web server may have no git.
    patch = models.TextField(
        blank=True, default="", db_default="", help_text="git diff base..head, bounded."
    )
    event_count = models.IntegerField(default=0, db_default=0)
    transcript_bytes = models.BigIntegerField(default=0, db_default=0)

    cost_text: str  # set by `views.describe_run` for the usage line; not a column

    class Meta:
        db_table = "task_runs"
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["task", "started_at"], name="task_runs_task_idx"),
            # Today's spend, per lane and worker, for budgets and the metrics bar.
            models.Index(fields=["started_at"], name="task_runs_time_idx"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of task #{self.task_id}"

    @property
    def is_running(self) -> bool:
        return self.finished_at is None

    @classmethod
    def start(
        cls,
        task: Task,
        *,
        worker_id: str,
        agent: str,
        kind: str,
        role: str,
        sandbox: str,
        note: str = "",
    ) -> Run:
        """The run of the task's next attempt, written before its agent starts."""
        return cls.objects.create(
            task=task,
            worker_id=worker_id,
            attempt=task.attempt_count + 1,
            agent=agent[:60],
            argv=[],
            kind=kind,
            role=role,
            sandbox=sandbox,
            note=note,
        )

    def record(self, **fields: object) -> None:
        """Write these columns only: a running run's tails, transcript counts and ending are
        written at different times, and no write may undo another."""
        for name, value in fields.items():
            setattr(self, name, value)
        type(self).objects.filter(pk=self.pk).update(**fields)

    def mark(self, outcome: str) -> None:
        """The outcome alone, for a run whose report found its claim gone."""
        self.record(outcome=outcome)

    def close(self, outcome: str, **fields: object) -> None:
        """The run is over: its outcome, the time, and what else is known of it."""
        self.record(finished_at=timezone.now(), outcome=outcome, **fields)


class RunEvent(models.Model):
    """One event of a run's transcript, in order: a message, a tool call, a result, an error.

    Written by the worker while the agent runs; the task page polls for events after the last
    sequence number it has, so a long transcript costs only what is new.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.IntegerField()
    kind = models.CharField(max_length=20)
    text = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "task_run_events"
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="task_run_events_run_seq_uniq")
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} event {self.seq} ({self.kind})"


class AuditEntry(models.Model):
    """A person's act that is no task's status change — a worker paused or resumed — and every
    refused attempt, with who, from which door, and why. Append-only, like the history."""

    DONE, REFUSED = "done", "refused"

    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    actor = models.CharField(max_length=200)
    door = models.CharField(max_length=20, blank=True, default="", db_default="")
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=200, blank=True, default="", db_default="")
    outcome = models.CharField(max_length=10)
    reason = models.TextField(blank=True, default="", db_default="")

    class Meta:
        db_table = "audit_log"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit log"
        indexes = [models.Index(fields=["-created_at"], name="audit_log_created_idx")]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.target}: {self.outcome}"
