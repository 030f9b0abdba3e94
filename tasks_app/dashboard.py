"""Read queries behind the dashboard: the filters and search, the metrics bar, the kanban
columns with their goals' stage strips, the dead-letter panel and the throughput chart.

Every function here runs a fixed number of queries whatever the number of tasks, so the board
costs the same with ten tasks or a million: counts come from one aggregate restricted to live
statuses (plus today's completions), each column fetches only its top cards, and one more query
reads the reviews of every card shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from workers_app.models import Worker, WorkerStatus, stale_cutoff

from . import costs
from .choices import ERROR_TYPE_CHOICES, OPEN_STATUSES, DeliveryState, Lane, Risk, Status
from .lifecycle.intake import is_task_id
from .models import Task, TaskHistory, TaskQuerySet
from .stages import NEEDS_PERSON, attach_stages

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
    # The stage strip (pipeline, round), the error shown only while it is the task's state
    # (not_before: a failed attempt's backoff), a review card's verdict.
    "pipeline",
    "pipeline_step",
    "review_round",
    "not_before",
    "parent",
    "verdict",
    "score",
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
# What needs a person comes first (approvals, blocked, dead letter), so those columns stay in
# view beside an open task and lead on a phone; then the work's flow from pending to completed.
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (Status.AWAITING_APPROVAL, ("-priority", "created_at", "id")),
    (Status.BLOCKED, ("-priority", "updated_at", "id")),
    (Status.DEAD_LETTER, ("-priority", "updated_at", "id")),
    (Status.PENDING, ("-priority", "created_at", "id")),
    (Status.IN_PROGRESS, ("-priority", "started_at", "id")),
    (Status.REVIEW_NEEDED, ("-priority", "created_at", "id")),
    (Status.COMPLETED, ("-updated_at", "-id")),
)
BOARD_STATUSES = frozenset(status for status, _ in COLUMNS)

# Delivery states people can filter by ("not yet" is every task still being built).
DELIVERY_STATE_CHOICES = [(value, label) for value, label in DeliveryState.choices if value]

MAX_SEARCH_LENGTH = 200
DEAD_LETTER_PANEL_LIMIT = 50
RETRY_ALL_LIMIT = 500


def cards_per_column() -> int:
    return getattr(settings, "VIBE_BOARD_CARDS_PER_COLUMN", 20)


# --- Filters ----------------------------------------------------------------------------------

# Statuses a person may filter by: the board's columns (cancelled work is on the history page).
STATUS_CHOICES = [(value, label) for value, label in Status.choices if value in BOARD_STATUSES]
# Words people type in the search box before a colon, each naming one of the filters.
QUALIFIERS = ("lane", "status", "worker", "error", "risk", "delivery")
_QUALIFIED = re.compile(r"^(?P<name>[a-z]+):(?P<value>\S*)$", re.IGNORECASE)


def failing() -> Q:
    """Tasks whose current state is a failure: stuck for a person (dead letter, blocked), or
    pending again after a failed attempt, waiting out its backoff.

    Only a failure sets `not_before` and a claim clears it, so a pending task with one is one
    whose last attempt failed; a task that moved on keeps `last_error_type` for its runs list,
    which is why the error shown on a card and the error filter both ask this first.
    """
    return Q(status__in=[Status.DEAD_LETTER, Status.BLOCKED]) | Q(
        status=Status.PENDING, not_before__isnull=False
    )


def _normalise(value: str) -> str:
    return value.strip().lower().replace("-", "_").replace(" ", "_")


def _choice(value: str, choices) -> str | None:
    """The choice a person meant: its value or its label, any case, dashes for underscores."""
    wanted = _normalise(value)
    for choice, label in choices:
        if wanted in (_normalise(choice), _normalise(str(label))):
            return choice
    return None


class BoardFilterForm(forms.Form):
    """The board's filters, read from the query string so a filtered board is a shareable link."""

    lane = forms.ChoiceField(required=False, choices=[("", "All lanes"), *Lane.choices])
    worker = forms.CharField(required=False, max_length=64)
    error = forms.ChoiceField(
        required=False,
        label="Error type",
        choices=[("", "Any error type"), *ERROR_TYPE_CHOICES],
    )
    q = forms.CharField(required=False, max_length=MAX_SEARCH_LENGTH, label="Search")
    delivery = forms.ChoiceField(
        required=False,
        label="Delivery state",
        choices=[("", "Any delivery state"), *DELIVERY_STATE_CHOICES],
    )
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *STATUS_CHOICES])
    risk = forms.ChoiceField(required=False, choices=[("", "Any risk"), *Risk.choices])
    reviews = forms.BooleanField(required=False, label="Show reviews")

    def clean_worker(self) -> str:
        return self.cleaned_data["worker"].strip()

    def clean_q(self) -> str:
        # NUL never appears in stored text, and PostgreSQL refuses it in a query (a 500).
        return self.cleaned_data["q"].replace("\x00", "").strip()


@dataclass(frozen=True)
class Search:
    """What the search box asked for: qualifiers (`lane:backend`), task ids (`#19`, or `19`
    alone, which may also be in a goal) and the free text matched against goals."""

    qualifiers: dict[str, str] = field(default_factory=dict)
    ids: tuple[int, ...] = ()
    number: int | None = None  # a bare number: a task id, or digits in a goal
    text: str = ""
    errors: tuple[str, ...] = ()

    @property
    def looked_up(self) -> list[int]:
        """The task ids asked for (by `#19` or a bare number) that a task could have."""
        wanted = [*self.ids, *([] if self.number is None else [self.number])]
        return [pk for pk in wanted if is_task_id(pk)]

    @classmethod
    def parse(cls, q: str) -> Search:
        qualifiers: dict[str, str] = {}
        ids: list[int] = []
        words: list[str] = []
        errors: list[str] = []
        for word in q.split():
            match = _QUALIFIED.match(word)
            name = match["name"].lower() if match else ""
            if match and name in QUALIFIERS:
                value, error = _qualifier_value(name, match["value"])
                if error:
                    errors.append(f"Search: {error} That part of the search is ignored.")
                else:
                    qualifiers[name] = value
            elif word.startswith("#") and word[1:].isascii() and word[1:].isdigit():
                ids.append(int(word[1:]))
            else:
                words.append(word)
        number = None
        if len(words) == 1 and words[0].isascii() and words[0].isdigit():
            number = int(words[0])
        return cls(qualifiers, tuple(ids), number, " ".join(words), tuple(errors))


def _qualifier_value(name: str, raw: str) -> tuple[str, str]:
    """The filter value a qualifier names, or an error saying what would have been understood."""
    if not raw:
        return "", f"{name}: needs a value, such as {_EXAMPLES[name]}."
    if name == "worker":
        return raw[:64], ""
    choices = {
        "lane": Lane.choices,
        "status": STATUS_CHOICES,
        "error": ERROR_TYPE_CHOICES,
        "risk": Risk.choices,
        "delivery": DELIVERY_STATE_CHOICES,
    }[name]
    value = _choice(raw, choices)
    if value is None:
        if name == "status" and _choice(raw, [(Status.CANCELLED, "cancelled")]):
            return "", "cancelled tasks are not on the board; the history page lists them."
        known = ", ".join(choice for choice, _ in choices)
        return "", f"“{raw[:40]}” is not a {name} here; use one of {known}."
    return value, ""


_EXAMPLES = {
    "lane": "lane:backend",
    "status": "status:dead_letter",
    "worker": "worker:@backend-1",
    "error": "error:timeout",
    "risk": "risk:high",
    "delivery": "delivery:conflict",
}


@dataclass(frozen=True)
class Filters:
    """The board's filters: the form's fields as the URL has them, and the parsed search.

    A qualifier in the search (`lane:backend`) counts like the field of the same name, and wins
    over it when both are set; the URL keeps what the person typed, so the link round-trips.
    """

    lane: str = ""
    worker: str = ""
    error: str = ""
    q: str = ""
    delivery: str = ""
    status: str = ""
    risk: str = ""
    reviews: bool = False
    errors: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_query(cls, data) -> Filters:
        """Valid filters from a query dict; an invalid one is dropped with a message saying why."""
        form = BoardFilterForm(data)
        form.is_valid()
        values = {
            name: form.cleaned_data.get(name, "")
            for name in ("lane", "worker", "error", "q", "delivery", "status", "risk")
            if name not in form.errors
        }
        messages = tuple(
            f"{form.fields[name].label or name.title()}: {' '.join(map(str, errs))} "
            "That filter is ignored."
            for name, errs in form.errors.items()
        )
        filters = cls(**values, reviews=bool(form.cleaned_data.get("reviews")), errors=messages)
        return replace(filters, errors=messages + filters.search.errors)

    @cached_property
    def search(self) -> Search:
        return Search.parse(self.q)

    def value(self, name: str) -> str:
        """A filter's value in effect: the search's qualifier, else the field."""
        return self.search.qualifiers.get(name) or getattr(self, name)

    @property
    def active(self) -> bool:
        return any(value for _, value in self.items())

    @property
    def shows_reviews(self) -> bool:
        """Review cards are folded into their goals unless asked for, or looked up by id."""
        return self.reviews or bool(self.search.ids) or self.search.number is not None

    @property
    def narrows(self) -> bool:
        """Whether anything narrows the tasks counted (Show reviews alone adds some)."""
        return any(value for name, value in self.items() if name != "reviews")

    @property
    def scope(self) -> str:
        """What the metrics tiles count, in words: 'all lanes', 'lane backend, risk high'."""
        parts = [f"{name} {self.value(name)}" for name in QUALIFIERS if self.value(name)]
        if self.search.ids:
            parts.append(", ".join(f"#{pk}" for pk in self.search.ids))
        if self.search.text:
            parts.append(f"“{self.search.text}”")
        return ", ".join(parts) if parts else "all lanes"

    def as_query(self) -> str:
        """The filters as a query string, for links and the next refresh."""
        return urlencode([(k, v) for k, v in self.items() if v])

    def items(self) -> list[tuple[str, str]]:
        return [
            ("lane", self.lane),
            ("worker", self.worker),
            ("error", self.error),
            ("status", self.status),
            ("risk", self.risk),
            ("delivery", self.delivery),
            ("q", self.q),
            ("reviews", "1" if self.reviews else ""),
        ]

    def apply(self, qs: QuerySet) -> QuerySet:
        """Narrow `qs` by every filter but the reviews switch (see `columns`)."""
        lane, worker, error = self.value("lane"), self.value("worker"), self.value("error")
        if lane:
            qs = qs.filter(lane=lane)
        if worker:
            # "worker:backend-1" means "@backend-1" too: the pool's ids start with "@".
            qs = qs.filter(worker_id__in=[worker, "@" + worker.lstrip("@")])
        if error:
            # Only a task whose current state is that failure: a completed task keeps its
            # attempts' errors in its runs list, not in this filter.
            qs = qs.filter(failing(), last_error_type=error)
        if self.value("status"):
            qs = qs.filter(status=self.value("status"))
        if self.value("risk"):
            qs = qs.filter(risk=self.value("risk"))
        if self.value("delivery"):
            qs = qs.filter(delivery_state=self.value("delivery"))
        search = self.search
        if search.ids:
            # An id past 64 bits names no task, and the database would refuse the number.
            qs = qs.filter(pk__in=[pk for pk in search.ids if is_task_id(pk)])
        if search.number is not None:
            by_id = Q(pk=search.number) if is_task_id(search.number) else Q()
            qs = qs.filter(by_id | Q(goal__icontains=search.text))
        elif search.text:
            qs = qs.filter(goal__icontains=search.text)
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
    # Review and QA tasks per status (completed: today), counted apart from people's goals.
    reviews: dict[str, int] = field(default_factory=dict)
    scope: str = "all lanes"  # what the task tiles count, in words
    online_workers: int = 0  # a fresh heartbeat and asking for work

    @property
    def reviews_completed_today(self) -> int:
        return self.reviews.get(Status.COMPLETED, 0)

    @property
    def reviews_running(self) -> int:
        return self.reviews.get(Status.IN_PROGRESS, 0)

    @property
    def reviews_waiting(self) -> int:
        return self.reviews.get(Status.PENDING, 0)

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


def _goal_and_review_counts(qs: QuerySet) -> tuple[dict[str, int], dict[str, int]]:
    """Like `live_counts`, in one query, but goals and reviews apart: (goals, reviews)."""
    is_review = ~Q(stage="")
    open_counts = (
        qs.filter(status__in=OPEN_STATUSES)
        .values("status")
        .annotate(n=Count("id"), reviews=Count("id", filter=is_review))
    )
    done_today = (
        qs.filter(status=Status.COMPLETED, updated_at__gte=start_of_today())
        .values("status")
        .annotate(n=Count("id"), reviews=Count("id", filter=is_review))
    )
    goals = {status: 0 for status, _ in COLUMNS}
    reviews = dict(goals)
    for row in open_counts.order_by().union(done_today.order_by(), all=True):
        goals[row["status"]] = row["n"] - row["reviews"]
        reviews[row["status"]] = row["reviews"]
    return goals, reviews


def metrics(filters: Filters | None = None) -> Metrics:
    """The metrics bar, in three queries: tasks per status (goals and reviews apart), workers,
    and today's spend per lane (the total is their sum: a run without a cost figure adds nothing).

    The task tiles count people's goals; the review and QA tasks the pipeline spawned for them
    are counted apart, so five goals read as five, not fifteen. With filters, the tiles count
    what the board shows (and say so); the workers tile always counts the whole pool.
    """
    filters = filters or Filters()
    counts, reviews = _goal_and_review_counts(filters.apply(Task.objects.all()))
    by_lane = costs.today_by_lane()
    lane = filters.value("lane")
    if lane:
        by_lane = {name: amount for name, amount in by_lane.items() if name == lane}
    # Liveness is a fresh heartbeat: a silent worker is neither online nor active, whatever its
    # columns say, and a retired one is not counted at all.
    alive = Q(last_heartbeat__gte=stale_cutoff())
    workers = Worker.objects.in_pool().aggregate(
        total=Count("pk"),
        active=Count("pk", filter=alive & Q(active_tasks__gt=0)),
        online=Count("pk", filter=alive & Q(status=WorkerStatus.ONLINE)),
    )
    return Metrics(
        active_workers=workers["active"] or 0,
        total_workers=workers["total"] or 0,
        online_workers=workers["online"] or 0,
        pending=counts[Status.PENDING],
        in_progress=counts[Status.IN_PROGRESS],
        awaiting_approval=counts[Status.AWAITING_APPROVAL],
        review_needed=counts[Status.REVIEW_NEEDED],
        # A stuck review needs a person as much as stuck work does: counted, and carded, too.
        blocked=counts[Status.BLOCKED] + reviews[Status.BLOCKED],
        dead_letter=counts[Status.DEAD_LETTER] + reviews[Status.DEAD_LETTER],
        completed_today=counts[Status.COMPLETED],
        spend_today=sum(by_lane.values(), costs.ZERO),
        spend_by_lane=by_lane,
        reviews=reviews,
        scope=filters.scope,
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
    """Cards per column, from the metrics bar's counts (made with the same filters): goals, and
    with "Show reviews" the reviews too."""
    board_metrics = board_metrics or metrics(filters)
    counts = {
        Status.PENDING: board_metrics.pending,
        Status.AWAITING_APPROVAL: board_metrics.awaiting_approval,
        Status.IN_PROGRESS: board_metrics.in_progress,
        Status.REVIEW_NEEDED: board_metrics.review_needed,
        Status.BLOCKED: board_metrics.blocked,
        Status.DEAD_LETTER: board_metrics.dead_letter,
        Status.COMPLETED: board_metrics.completed_today,
    }
    if filters.shows_reviews:  # blocked and dead letter count their reviews already
        counts = {
            k: v + (0 if k in NEEDS_PERSON else board_metrics.reviews.get(k, 0))
            for k, v in counts.items()
        }
    return {str(k): v for k, v in counts.items()}


def card_queryset() -> TaskQuerySet:
    return Task.objects.only(*CARD_FIELDS)


def columns(filters: Filters, counts: dict[str, int], limit: int | None = None) -> list[Column]:
    """One small query per column: its most urgent cards, never the whole column; then one for
    the reviews of every goal shown (its stage strip).

    Reviews are folded into their goal's card unless "Show reviews" is on, except where a person
    is needed (blocked, dead letter): a stuck review gets its own card and Retry button there.
    The completed column shows today's most recent completions (and any task looked up by id);
    the history page has the rest.
    """
    limit = limit or cards_per_column()
    today = start_of_today()
    wanted = filters.search.looked_up
    result = []
    for status, ordering in COLUMNS:
        qs = filters.apply(card_queryset().filter(status=status))
        if not filters.shows_reviews and status not in NEEDS_PERSON:
            qs = qs.filter(stage="")
        if status == Status.COMPLETED:
            qs = qs.filter(Q(updated_at__gte=today) | Q(pk__in=wanted))
        cards = list(qs.order_by(*ordering)[:limit])
        count = counts.get(status, 0)
        if status == Status.COMPLETED and wanted:
            count = max(count, len(cards))  # an older task found by its id is shown as well
        result.append(Column(status, Status(status).label, count, cards))
    attach_stages([card for column in result for card in column.cards])
    return result


def has_card(task: Task, filters: Filters) -> bool:
    """Whether the task has a card of its own on a board with these filters (a review in the
    flow is folded into its goal's card unless reviews are shown)."""
    if task.status not in BOARD_STATUSES:
        return False
    return filters.shows_reviews or not task.stage or task.status in NEEDS_PERSON


def off_board(filters: Filters) -> list[Task]:
    """Tasks looked up by id (`#19`) that have no column: cancelled ones, said in words."""
    wanted = filters.search.looked_up
    if not wanted:
        return []
    qs = Task.objects.filter(pk__in=wanted).exclude(status__in=BOARD_STATUSES)
    return list(qs.only("id", "goal", "status").order_by("id"))


def dead_letter_rows(filters: Filters, limit: int = DEAD_LETTER_PANEL_LIMIT) -> list[Task]:
    """The seed's DLQ list: newest first, with error type, attempts and created time."""
    return list(filters.apply(card_queryset().dead_letter())[:limit])


def dead_letter_ids(filters: Filters, limit: int = RETRY_ALL_LIMIT) -> list[int]:
    return list(filters.apply(Task.objects.dead_letter()).values_list("pk", flat=True)[:limit])


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
    """History rows that record a failed attempt: dead letter, or a failed retry with backoff
    (a release by a draining worker goes the same way, in progress → pending, but is no
    failure; a budget stop is a block, not a retry)."""
    return Q(event="failed", to_status__in=(Status.PENDING, Status.DEAD_LETTER))


def throughput(hours: int = 24, now: datetime | None = None) -> Throughput:
    """Goals completed and failed per hour over the last `hours` hours, per lane, and the
    reviews and QA checks of them as one series of their own; one query."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    tz = timezone.get_current_timezone()
    rows = (
        TaskHistory.objects.filter(created_at__gte=start, created_at__lt=end)
        .filter(Q(to_status=Status.COMPLETED) | _failed_transition())
        .annotate(hour=TruncHour("created_at", tzinfo=tz))
        .values("task__lane", "task__stage", "hour", "to_status")
        .annotate(n=Count("id"))
    )
    slots = [timezone.localtime(start + timedelta(hours=i), tz) for i in range(hours)]
    index = {slot.replace(minute=0, second=0, microsecond=0): i for i, slot in enumerate(slots)}
    series: dict[str, LaneSeries] = {}
    for row in rows:
        lane = REVIEWS_SERIES if row["task__stage"] else row["task__lane"]
        hour = row["hour"]
        if hour is None:
            continue
        slot = index.get(timezone.localtime(hour, tz).replace(minute=0, second=0, microsecond=0))
        if slot is None:
            continue
        entry = series.setdefault(
            lane, LaneSeries(lane, _series_label(lane), [0] * hours, [0] * hours)
        )
        if row["to_status"] == Status.COMPLETED:
            entry.completed[slot] += row["n"]
        else:
            entry.failed[slot] += row["n"]
    order = [*Lane.values, REVIEWS_SERIES]
    ordered = [series[lane] for lane in order if lane in series]
    ordered += [s for lane, s in series.items() if lane not in order]
    return Throughput(hours=slots, lanes=ordered)


# The throughput chart's series for every review and QA check of people's goals.
REVIEWS_SERIES = "reviews"


def _series_label(lane: str) -> str:
    if lane == REVIEWS_SERIES:
        return "Reviews and QA checks"
    return Lane(lane).label if lane in Lane.values else lane
