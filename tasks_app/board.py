"""Read queries behind the dashboard: the metrics bar, the kanban columns, the dead-letter panel
and the throughput chart.

Every function here runs a fixed number of queries whatever the number of tasks, so the board
costs the same with ten tasks or a million: counts come from one aggregate restricted to live
statuses (plus today's completions), and each column fetches only its top cards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from . import costs
from .lifecycle import ERROR_TYPES
from .models import OPEN_STATUSES, DeliveryState, Lane, Status, Task, TaskHistory

# Fields a card needs; the big text and JSON columns stay in the database.
CARD_FIELDS = (
    "id",
    "goal",
    "lane",
    "status",
    "priority",
    "risk",
    "attempt_count",
    "max_attempts",
    "worker_id",
    "last_error_type",
    "created_at",
    "updated_at",
    "started_at",
    "stage",
    # The delivery badge (delivery_summary): a few short columns, the conflict list is small.
    "delivery",
    "delivery_state",
    "base_branch",
    "merge_commit",
    "conflicts",
    "pr_url",
    "pr_number",
)

# Column order on the board, and the order that puts the most urgent cards first in each.
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (Status.PENDING, ("-priority", "created_at", "id")),
    (Status.AWAITING_APPROVAL, ("-priority", "created_at", "id")),
    (Status.IN_PROGRESS, ("-priority", "started_at", "id")),
    (Status.REVIEW_NEEDED, ("-priority", "created_at", "id")),
    (Status.BLOCKED, ("-priority", "updated_at", "id")),
    (Status.DEAD_LETTER, ("-priority", "updated_at", "id")),
    (Status.COMPLETED, ("-updated_at", "-id")),
)
BOARD_STATUSES = frozenset(status for status, _ in COLUMNS)

# Error types people can filter by: the lifecycle's, plus the pipeline's review outcomes.
ERROR_TYPE_CHOICES = sorted({*ERROR_TYPES, "review_blocked", "review_failed"})
# Delivery states people can filter by ("not yet" is every task still being built).
DELIVERY_STATE_CHOICES = [(value, label) for value, label in DeliveryState.choices if value]

MAX_SEARCH_LENGTH = 200
DEAD_LETTER_PANEL_LIMIT = 50
RETRY_ALL_LIMIT = 500


def cards_per_column() -> int:
    return getattr(settings, "VIBE_BOARD_CARDS_PER_COLUMN", 20)


# --- Filters ----------------------------------------------------------------------------------


class BoardFilterForm(forms.Form):
    """The board's filters, read from the query string so a filtered board is a shareable link."""

    lane = forms.ChoiceField(required=False, choices=[("", "All lanes"), *Lane.choices])
    worker = forms.CharField(required=False, max_length=64)
    error = forms.ChoiceField(
        required=False,
        label="Error type",
        choices=[("", "Any error type")] + [(e, e.replace("_", " ")) for e in ERROR_TYPE_CHOICES],
    )
    q = forms.CharField(required=False, max_length=MAX_SEARCH_LENGTH, label="Search goals")
    delivery = forms.ChoiceField(
        required=False,
        label="Delivery state",
        choices=[("", "Any delivery state"), *DELIVERY_STATE_CHOICES],
    )

    def clean_worker(self) -> str:
        return self.cleaned_data["worker"].strip()

    def clean_q(self) -> str:
        return self.cleaned_data["q"].strip()


@dataclass(frozen=True)
class Filters:
    lane: str = ""
    worker: str = ""
    error: str = ""
    q: str = ""
    delivery: str = ""
    errors: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_query(cls, data) -> Filters:
        """Valid filters from a query dict; an invalid one is dropped with a message saying why."""
        form = BoardFilterForm(data)
        form.is_valid()
        values = {
            name: form.cleaned_data.get(name, "")
            for name in ("lane", "worker", "error", "q", "delivery")
            if name not in form.errors
        }
        messages = tuple(
            f"{form.fields[name].label or name.title()}: {' '.join(errs)} That filter is ignored."
            for name, errs in form.errors.items()
        )
        return cls(**values, errors=messages)

    @property
    def active(self) -> bool:
        return bool(self.lane or self.worker or self.error or self.q or self.delivery)

    def as_query(self) -> str:
        """The filters as a query string, for links and the next refresh."""
        pairs = [(k, v) for k, v in self.items() if v]
        return urlencode(pairs)

    def items(self) -> list[tuple[str, str]]:
        return [
            ("lane", self.lane),
            ("worker", self.worker),
            ("error", self.error),
            ("q", self.q),
            ("delivery", self.delivery),
        ]

    def apply(self, qs: QuerySet) -> QuerySet:
        if self.lane:
            qs = qs.filter(lane=self.lane)
        if self.worker:
            qs = qs.filter(worker_id=self.worker)
        if self.error:
            qs = qs.filter(last_error_type=self.error)
        if self.q:
            qs = qs.filter(goal__icontains=self.q)
        if self.delivery:
            qs = qs.filter(delivery_state=self.delivery)
        return qs


# --- Metrics ----------------------------------------------------------------------------------


def start_of_today() -> datetime:
    now = timezone.localtime()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Metrics:
    active_workers: int
    total_workers: int
    pending: int
    in_progress: int
    awaiting_approval: int
    review_needed: int
    blocked: int
    dead_letter: int
    completed_today: int
    spend_today: Decimal = costs.ZERO
    spend_by_lane: dict[str, Decimal] = field(default_factory=dict)

    @property
    def spend_today_text(self) -> str:
        return costs.format_usd(self.spend_today)

    @property
    def spend_lanes_text(self) -> str:
        """'backend $1.20 · qa $0.30', the most expensive lane first."""
        ordered = sorted(self.spend_by_lane.items(), key=lambda item: (-item[1], item[0]))
        return " · ".join(f"{lane} {costs.format_usd(amount)}" for lane, amount in ordered)


def live_counts(qs: QuerySet | None = None) -> dict[str, int]:
    """Tasks per live status, plus today's completions under `completed`, in one query.

    Two grouped selects joined by UNION ALL, so each side walks the (status, updated_at) index:
    SQLite does not use the index for an OR of the two inside one WHERE once a filter such as
    the lane is added, and would scan the whole table. The cost follows the open work and
    today's completions, never the size of the history.
    """
    qs = Task.objects.all() if qs is None else qs
    open_counts = qs.filter(status__in=OPEN_STATUSES).values("status").annotate(n=Count("id"))
    done_today = (
        qs.filter(status=Status.COMPLETED, updated_at__gte=start_of_today())
        .values("status")
        .annotate(n=Count("id"))
    )
    counts = {status: 0 for status, _ in COLUMNS}
    for row in open_counts.order_by().union(done_today.order_by(), all=True):
        counts[row["status"]] = row["n"]
    return counts


def metrics() -> Metrics:
    """The seed's metrics bar, in three queries: live tasks, workers, and today's spend per
    lane (the total is their sum: a run without a cost figure adds nothing to either)."""
    from workers_app.models import Worker

    counts = live_counts()
    by_lane = costs.today_by_lane()
    workers = Worker.objects.aggregate(
        total=Count("pk"), active=Count("pk", filter=Q(active_tasks__gt=0))
    )
    return Metrics(
        active_workers=workers["active"] or 0,
        total_workers=workers["total"] or 0,
        pending=counts[Status.PENDING],
        in_progress=counts[Status.IN_PROGRESS],
        awaiting_approval=counts[Status.AWAITING_APPROVAL],
        review_needed=counts[Status.REVIEW_NEEDED],
        blocked=counts[Status.BLOCKED],
        dead_letter=counts[Status.DEAD_LETTER],
        completed_today=counts[Status.COMPLETED],
        spend_today=sum(by_lane.values(), costs.ZERO),
        spend_by_lane=by_lane,
    )


# --- Columns ----------------------------------------------------------------------------------


@dataclass
class Column:
    status: str
    label: str
    count: int
    cards: list[Task]

    @property
    def hidden_count(self) -> int:
        return max(self.count - len(self.cards), 0)


def column_counts(filters: Filters, board_metrics: Metrics | None = None) -> dict[str, int]:
    """Cards per column; reuses the metrics bar's counts when no filter is set."""
    if not filters.active and board_metrics is not None:
        counts = {
            Status.PENDING: board_metrics.pending,
            Status.AWAITING_APPROVAL: board_metrics.awaiting_approval,
            Status.IN_PROGRESS: board_metrics.in_progress,
            Status.REVIEW_NEEDED: board_metrics.review_needed,
            Status.BLOCKED: board_metrics.blocked,
            Status.DEAD_LETTER: board_metrics.dead_letter,
            Status.COMPLETED: board_metrics.completed_today,
        }
        return {str(k): v for k, v in counts.items()}
    return live_counts(filters.apply(Task.objects.all()))


def card_queryset() -> QuerySet:
    return Task.objects.only(*CARD_FIELDS)


def columns(filters: Filters, counts: dict[str, int], limit: int | None = None) -> list[Column]:
    """One small query per column: its most urgent cards, never the whole column.

    The completed column shows today's most recent completions; the history page has the rest.
    """
    limit = limit or cards_per_column()
    today = start_of_today()
    result = []
    for status, ordering in COLUMNS:
        qs = filters.apply(card_queryset().filter(status=status))
        if status == Status.COMPLETED:
            qs = qs.filter(updated_at__gte=today)
        cards = list(qs.order_by(*ordering)[:limit])
        result.append(Column(status, Status(status).label, counts.get(status, 0), cards))
    return result


def dead_letter_rows(filters: Filters, limit: int = DEAD_LETTER_PANEL_LIMIT) -> list[Task]:
    """The seed's DLQ list: newest first, with error type, attempts and created time."""
    qs = filters.apply(card_queryset().filter(status=Status.DEAD_LETTER))
    return list(qs.order_by("-created_at", "-id")[:limit])


def dead_letter_ids(filters: Filters, limit: int = RETRY_ALL_LIMIT) -> list[int]:
    qs = filters.apply(Task.objects.filter(status=Status.DEAD_LETTER))
    return list(qs.order_by("-created_at", "-id").values_list("pk", flat=True)[:limit])


# --- Throughput -------------------------------------------------------------------------------


@dataclass
class LaneSeries:
    lane: str
    label: str
    completed: list[int]
    failed: list[int]

    @property
    def total_completed(self) -> int:
        return sum(self.completed)

    @property
    def total_failed(self) -> int:
        return sum(self.failed)

    @property
    def peak(self) -> int:
        return max([c + f for c, f in zip(self.completed, self.failed, strict=True)] or [0])


@dataclass
class Throughput:
    hours: list[datetime]
    lanes: list[LaneSeries]

    @property
    def peak(self) -> int:
        return max([lane.peak for lane in self.lanes] or [0])


def _failed_transition() -> Q:
    """History rows that record a failed attempt: dead letter, or a failed retry with backoff.

    The lifecycle notes a retried failure as "attempt N/M failed (…)"; a release by a draining
    worker goes the same way (in progress → pending) but is not a failure.
    """
    retried = Q(
        from_status=Status.IN_PROGRESS, to_status=Status.PENDING, note__startswith="attempt"
    )
    return Q(to_status=Status.DEAD_LETTER) | retried


def throughput(hours: int = 24, now: datetime | None = None) -> Throughput:
    """Tasks completed and failed per hour over the last `hours` hours, per lane; one query."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    tz = timezone.get_current_timezone()
    rows = (
        TaskHistory.objects.filter(created_at__gte=start, created_at__lt=end)
        .filter(Q(to_status=Status.COMPLETED) | _failed_transition())
        .annotate(hour=TruncHour("created_at", tzinfo=tz))
        .values("task__lane", "hour", "to_status")
        .annotate(n=Count("id"))
    )
    slots = [timezone.localtime(start + timedelta(hours=i), tz) for i in range(hours)]
    index = {slot.replace(minute=0, second=0, microsecond=0): i for i, slot in enumerate(slots)}
    series: dict[str, LaneSeries] = {}
    for row in rows:
        lane = row["task__lane"]
        hour = row["hour"]
        if hour is None:
            continue
        slot = index.get(timezone.localtime(hour, tz).replace(minute=0, second=0, microsecond=0))
        if slot is None:
            continue
        entry = series.setdefault(
            lane,
            LaneSeries(
                lane, Lane(lane).label if lane in Lane.values else lane, [0] * hours, [0] * hours
            ),
        )
        if row["to_status"] == Status.COMPLETED:
            entry.completed[slot] += row["n"]
        else:
            entry.failed[slot] += row["n"]
    ordered = [series[lane] for lane in Lane.values if lane in series]
    ordered += [s for lane, s in series.items() if lane not in Lane.values]
    return Throughput(hours=slots, lanes=ordered)
