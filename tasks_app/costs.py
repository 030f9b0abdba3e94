"""What the agents cost: per task (its builder runs, reviews and rework) and per day.

Every figure is a sum over `Run.cost_usd`, so nothing is kept twice. "Today" starts at midnight
in `VIBE_TIME_ZONE`, where the daily budget resets too.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from typing import TypedDict

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from .models import Run, Task

ZERO = Decimal("0")


def start_of_today(now: datetime | None = None) -> datetime:
    """Midnight today in the factory's time zone (VIBE_TIME_ZONE)."""
    local = timezone.localtime(now or timezone.now())
    return timezone.make_aware(datetime.combine(local.date(), time.min), local.tzinfo)


def _runs_of_work(task: Task | int) -> QuerySet[Run]:
    """Runs of a piece of work: the builder task's own and those of its reviews."""
    pk = task.pk if isinstance(task, Task) else int(task)
    return Run.objects.filter(Q(task_id=pk) | Q(task__parent_id=pk))


def work_root_id(task: Task) -> int:
    """The builder task a review belongs to (a review's cost counts towards its work)."""
    return task.parent_id if task.stage and task.parent_id else task.pk


def task_total(task: Task | int) -> Decimal:
    """Spend of a piece of work so far: builder runs, every review and every rework round."""
    total = _runs_of_work(task).aggregate(total=Sum("cost_usd"))["total"]
    return total or ZERO


class WorkUsage(TypedDict):
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


def task_usage(task: Task | int) -> WorkUsage:
    """Tokens and cost of a piece of work, summed over its runs."""
    sums = _runs_of_work(task).aggregate(
        cost_usd=Sum("cost_usd"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cache_read_tokens=Sum("cache_read_tokens"),
        cache_write_tokens=Sum("cache_write_tokens"),
    )
    return WorkUsage(
        cost_usd=sums["cost_usd"] or ZERO,
        input_tokens=sums["input_tokens"] or 0,
        output_tokens=sums["output_tokens"] or 0,
        cache_read_tokens=sums["cache_read_tokens"] or 0,
        cache_write_tokens=sums["cache_write_tokens"] or 0,
    )


def today_total(now: datetime | None = None) -> Decimal:
    since = start_of_today(now)
    total = Run.objects.filter(started_at__gte=since).aggregate(total=Sum("cost_usd"))["total"]
    return total or ZERO


def today_by_lane(now: datetime | None = None) -> dict[str, Decimal]:
    """Today's spend per lane of the task run (a review counts in its auditor's lane)."""
    rows = (
        Run.objects.filter(started_at__gte=start_of_today(now), cost_usd__isnull=False)
        .values_list("task__lane")
        .annotate(total=Sum("cost_usd"))
    )
    return {lane: total for lane, total in rows}


def today_by_worker(now: datetime | None = None) -> dict[str, Decimal]:
    rows = (
        Run.objects.filter(started_at__gte=start_of_today(now), cost_usd__isnull=False)
        .values_list("worker_id")
        .annotate(total=Sum("cost_usd"))
    )
    return {worker: total for worker, total in rows if worker}


def parse_usd(value: object) -> Decimal | None:
    """A cost as an event's data holds it (a string or number), or None when it is not one."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def format_usd(amount: Decimal | None) -> str:
    """$0.0123 below a cent, $1.23 above; "—" for no figure."""
    if amount is None:
        return "—"
    if amount and abs(amount) < Decimal("0.01"):
        return f"${amount:.4f}"
    return f"${amount:.2f}"


USD_PLACES = Decimal("0.000001")  # Run.cost_usd keeps six decimal places


def json_usd(amount: Decimal | None) -> str | None:
    """A cost for --json: a string with the six decimals Run.cost_usd keeps (SQLite's SUM
    hands back floats' digits otherwise)."""
    return None if amount is None else f"{amount.quantize(USD_PLACES)}"
