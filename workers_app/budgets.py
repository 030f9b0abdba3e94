"""Budgets: what a piece of work and the whole factory may spend, and what a run cost.

Spend is always summed from `Run.cost_usd` (`tasks_app.costs`), so a figure is never kept
twice. A run's cost is the agent's own figure when it printed one (Claude Code, Aider), else
its tokens priced with `VIBE_MODEL_PRICES` (Codex, Gemini), else unknown (None).

- `VIBE_TASK_BUDGET_USD`: a piece of work (its builder runs, every review and rework round)
  stops at its budget; agents that take a cap get what is left (`budget_left`).
- `VIBE_DAILY_BUDGET_USD`: the factory's spend since midnight in `VIBE_TIME_ZONE`; people are
  told once per day (`notify_daily_budget`), however many workers notice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from tasks_app import costs
from tasks_app.choices import NotificationEvent
from tasks_app.models import Task
from tasks_app.signals import factory_alert

from .adapters.base import Usage
from .slots import Slot

MILLION = Decimal(1_000_000)
PROVIDER_PREFIXES = ("anthropic/", "openai/", "gemini/", "google/", "models/", "openrouter/")


# --- Per piece of work ------------------------------------------------------------------------


def _work_spend(task: Task) -> tuple[int, Decimal]:
    root = costs.work_root_id(task)
    return root, costs.task_total(root)


def task_budget_reached(task: Task) -> str | None:
    """Why the work `task` belongs to may not spend more, or None (no budget, or money left)."""
    budget = settings.VIBE_TASK_BUDGET_USD
    if budget is None:
        return None
    root, spent = _work_spend(task)
    if spent < budget:
        return None
    return (
        f"task #{root} has spent {costs.format_usd(spent)} of its "
        f"{costs.format_usd(budget)} budget (VIBE_TASK_BUDGET_USD)"
    )


def no_money_to_start(task: Task) -> str:
    """Why a run of `task` may not start for want of budget, or "" (it may)."""
    reason = task_budget_reached(task)
    left = budget_left(task)
    if not reason and left is not None and left < Decimal("0.01"):
        reason = f"the task has less than a cent of its VIBE_TASK_BUDGET_USD left (${left})"
    return reason or ""


def budget_left(task: Task) -> Decimal | None:
    """What the work may still spend (never below 0), or None without a task budget."""
    budget = settings.VIBE_TASK_BUDGET_USD
    if budget is None:
        return None
    _root, spent = _work_spend(task)
    return max(budget - spent, Decimal("0"))


# --- Per day ------------------------------------------------------------------------------------


def _today(now: datetime | None) -> tuple[str, Decimal]:
    now = now or timezone.now()
    # Quantized: SQLite sums decimals as floats, PostgreSQL keeps the column's six places.
    spent = Decimal(costs.today_total(now)).quantize(costs.USD_PLACES)
    return timezone.localtime(now).date().isoformat(), spent


def daily_budget_reached(now: datetime | None = None) -> str | None:
    """Why no new run may start today, or None (no daily budget, or money left)."""
    budget = settings.VIBE_DAILY_BUDGET_USD
    if budget is None:
        return None
    day, spent = _today(now)
    if spent < budget:
        return None
    return (
        f"the factory has spent {costs.format_usd(spent)} today ({day}, {settings.TIME_ZONE}) "
        f"of its {costs.format_usd(budget)} daily budget (VIBE_DAILY_BUDGET_USD)"
    )


def notify_daily_budget(now: datetime | None = None) -> bool:
    """Tell people the daily budget is reached, once per day; True if this call told them.

    Safe to call from every worker after every run: the row's key is the day, and the database
    keeps one row per key and channel, so only the first caller of the day writes.
    """
    reason = daily_budget_reached(now)
    if reason is None:
        return False
    day, spent = _today(now)
    responses = factory_alert.send(
        sender=__name__,
        event=NotificationEvent.BUDGET_REACHED,
        note=reason,
        data={
            "day": day,
            "time_zone": settings.TIME_ZONE,
            "spent_usd": str(spent),
            "budget_usd": str(settings.VIBE_DAILY_BUDGET_USD),
        },
        key=f"budget_reached:{day}",
    )
    return any(recorded for _, recorded in responses)


# --- What one run cost --------------------------------------------------------------------------


def model_price(model: str) -> dict | None:
    """The price entry for a model as the agent named it: exact, else the longest known prefix
    ("claude-sonnet-4-5-20250929" → "claude-sonnet-4-5"), after a provider prefix is dropped."""
    name = (model or "").strip().lower()
    for prefix in PROVIDER_PREFIXES:
        name = name.removeprefix(prefix)
    if not name:
        return None
    prices = settings.VIBE_MODEL_PRICES
    if name in prices:
        return prices[name]
    known = [m for m in prices if name.startswith(m) and name[len(m) : len(m) + 1] in "-@:."]
    return prices[max(known, key=len)] if known else None


def run_cost(usage: Usage) -> Decimal | None:
    """The run's cost in USD: the agent's own figure, else priced tokens, else None."""
    if usage.cost_usd is not None:
        return usage.cost_usd
    counts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    )
    if all(count is None for count in counts):
        return None
    price = model_price(usage.model)
    if price is None:
        return None
    input_tokens, output_tokens, cache_read, cache_write = (count or 0 for count in counts)
    if price["input_includes_cache_read"]:
        input_tokens = max(input_tokens - cache_read, 0)
    total = (
        input_tokens * price["input"]
        + output_tokens * price["output"]
        + cache_read * price["cache_read"]
        + cache_write * price["cache_write"]
    ) / MILLION
    return total.quantize(costs.USD_PLACES)


def stop_if_spent(slot: Slot) -> None:
    """Stop an agent whose run has spent what is left of its task's budget.

    For agents that take no cap of their own, from the usage they report as they go.
    """
    if slot.budget_left is None or slot.over_budget or slot.reader is None:
        return
    spent = run_cost(slot.reader.report.usage)
    if spent is not None and spent >= slot.budget_left and slot.process is not None:
        slot.over_budget = True
        slot.note(f"stopped: the run spent ${spent}, the task's budget is used up")
        slot.process.stop()
