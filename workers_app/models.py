"""Workers, on the seed's `worker_health` table.

`status` is what a person or the worker itself asked for (online, paused, draining, offline);
whether a worker is alive is derived from its heartbeat, never a flag that can go stale.

Two more columns say which rows are the pool. `managed` rows are the configured pool that
`runfactory` starts (the default pool's rows, rows added in the admin); a row a one-off
`runworker` made is not, so it stays a one-off. `retired_at` hides a stale worker from the pool
and the counts while keeping the row, so its tasks stay attributed; a retired worker that
heartbeats again (someone started it) is back, with no flag to clear: retired means "retired and
silent since".
"""

from __future__ import annotations

import secrets
import string
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from tasks_app import ages
from tasks_app.choices import Lane, Tier


class WorkerStatus(models.TextChoices):
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    PAUSED = "paused", "Paused"
    DRAINING = "draining", "Draining"


def stale_cutoff() -> datetime:
    """A heartbeat older than this is no heartbeat: the worker has no live process."""
    return timezone.now() - timedelta(seconds=settings.VIBE_HEARTBEAT_STALE_SECONDS)


# Retired, and no heartbeat since: hidden from the pool. A later heartbeat brings it back.
_RETIRED = Q(retired_at__isnull=False) & (
    Q(last_heartbeat__isnull=True) | Q(last_heartbeat__lte=F("retired_at"))
)


class WorkerQuerySet(models.QuerySet):
    def alive(self) -> WorkerQuerySet:
        """Workers with a fresh heartbeat: what "online" means wherever it is counted.

        A retired worker is never alive: it was retired stale, and a heartbeat since un-retires it.
        """
        return self.filter(last_heartbeat__gte=stale_cutoff())

    def in_pool(self) -> WorkerQuerySet:
        """Every worker but the retired ones: what the pool page and the counts show."""
        return self.filter(Q(retired_at__isnull=True) | Q(last_heartbeat__gt=F("retired_at")))

    def retired(self) -> WorkerQuerySet:
        return self.filter(_RETIRED)

    def configured_pool(self) -> WorkerQuerySet:
        """The configured pool `runfactory` starts: managed rows that are not retired."""
        return self.in_pool().filter(managed=True)


class Worker(models.Model):
    worker_id = models.CharField(max_length=64, primary_key=True)
    lane = models.CharField(max_length=20, choices=Lane.choices)
    tier = models.CharField(
        max_length=10, choices=Tier.choices, default=Tier.JUNIOR, db_default=Tier.JUNIOR
    )
    capacity_limit = models.IntegerField(default=1, db_default=1)
    status = models.CharField(
        max_length=10,
        choices=WorkerStatus.choices,
        default=WorkerStatus.ONLINE,
        db_default=WorkerStatus.ONLINE,
    )
    priority_score = models.IntegerField(
        default=50, db_default=50, help_text="Higher is preferred when several workers could."
    )
    active_tasks = models.IntegerField(
        default=0, db_default=0, help_text="Kept equal to its in-progress tasks by the lifecycle."
    )
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    agent_profile = models.CharField(max_length=60, blank=True, default="", db_default="")
    status_reason = models.TextField(
        blank=True,
        default="",
        db_default="",
        help_text="Why the worker has its status, e.g. why it paused itself.",
    )
    hostname = models.CharField(max_length=200, blank=True, default="", db_default="")
    pid = models.IntegerField(null=True, blank=True)
    # Off by default, so a row made by any other way than the admin or a migration (a one-off
    # `runworker --lane …`, a script) is never started by `runfactory` unasked.
    managed = models.BooleanField(
        "started by runfactory",
        default=False,
        db_default=False,
        help_text="Part of the configured pool: runfactory starts a worker process for it. "
        "Rows a one-off runworker created are not, until ticked here.",
    )
    retired_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set by Retire: hidden from the pool and counts until it heartbeats again.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    objects = WorkerQuerySet.as_manager()

    offered: list[Any]  # the pool page's actions for this person (`views._offer`); not a column

    class Meta:
        db_table = "worker_health"
        ordering = ["lane", "worker_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(capacity_limit__gte=0), name="worker_capacity_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(active_tasks__gte=0), name="worker_active_non_negative"
            ),
        ]
        # Also lets a person retire workers (the name stays: databases keep the old one).
        permissions = [("manage_workers", "Can pause, resume and drain workers")]

    def __str__(self) -> str:
        return self.worker_id

    @property
    def heartbeat_age(self) -> timedelta | None:
        if self.last_heartbeat is None:
            return None
        return timezone.now() - self.last_heartbeat

    @property
    def is_alive(self) -> bool:
        age = self.heartbeat_age
        return age is not None and age.total_seconds() <= settings.VIBE_HEARTBEAT_STALE_SECONDS

    @property
    def is_retired(self) -> bool:
        """Retired and silent since (a heartbeat after the retirement means it is back)."""
        if self.retired_at is None:
            return False
        return self.last_heartbeat is None or self.last_heartbeat <= self.retired_at

    @property
    def display_status(self) -> str:
        """What the pool shows: a worker that stopped heartbeating is offline, whatever it said."""
        if self.is_retired:
            return "retired"
        if not self.is_alive:
            return WorkerStatus.OFFLINE
        return self.status

    @property
    def liveness_text(self) -> str:
        """The status in words, everywhere it is shown: "online", "paused", "retired", or
        "offline (no heartbeat for 7m)" for one whose column says otherwise but is silent."""
        shown = self.display_status
        if shown != WorkerStatus.OFFLINE or self.status == WorkerStatus.OFFLINE:
            return shown
        age = self.heartbeat_age
        if age is None:
            return "offline (no heartbeat yet)"
        return f"offline (no heartbeat for {ages.age(age)})"


def _new_instance_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(6))


class Instance(models.Model):
    """This factory database's own name, one row made on first use.

    It prefixes the git branches and worktree folders, so two factories on one repository (or a
    database made afresh on an old one) never share a branch or clean each other's worktrees.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    instance_id = models.CharField(max_length=12, unique=True, default=_new_instance_id)
    created_at = models.DateTimeField(auto_now_add=True, db_default=Now())

    class Meta:
        db_table = "factory_instance"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="factory_instance_one_row")]

    def __str__(self) -> str:
        return self.instance_id

    @classmethod
    def current(cls) -> str:
        """The id, made on first use; two processes asking at once get the same one."""
        try:
            return cls.objects.get_or_create(pk=1)[0].instance_id
        except IntegrityError:  # the other process's row landed between our read and insert
            return cls.objects.get(pk=1).instance_id
