"""Closing a run's row when its agent ran: what it printed, what it used and cost."""

from __future__ import annotations

from dataclasses import replace

from django.db.models import Sum

from tasks_app.models import Run

from . import budgets
from .adapters.base import Report, Usage
from .runner import RunResult
from .slots import Slot
from .workspace import Change


def _minus(total: int | None, earlier: int | None) -> int | None:
    return None if total is None else max(total - (earlier or 0), 0)


def close_run(
    slot: Slot,
    result: RunResult,
    outcome: str,
    *,
    report: Report | None = None,
    change: Change | None = None,
    session_total: bool = False,
) -> None:
    """The run row of an agent that ran: its exit, output tails, usage and cost, its change.

    `session_total`: the agent's kind reports a resumed session's running total.
    """
    fields: dict = {
        "exit_code": result.exit_code,
        "duration_seconds": round(result.duration, 3),
        "stdout_tail": result.stdout,
        "stderr_tail": result.stderr,
    }
    if report is not None:
        usage = own_usage(slot, report.usage) if session_total else report.usage
        fields.update(
            model=usage.model[:100],
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost_usd=budgets.run_cost(usage),
            turns=usage.turns,
        )
        if report.session_id:
            fields["session_id"] = report.session_id[:200]
    if change is not None:
        fields.update(head_commit=change.head[:64], changed_files=change.files)
    if slot.patch is not None:
        fields["patch"] = slot.patch
    if slot.transcript is not None:
        slot.transcript.flush()
    slot.run.close(outcome, **fields)


def own_usage(slot: Slot, usage: Usage) -> Usage:
    """This run's share, for CLIs that report a resumed session's running total."""
    if not slot.session_id:
        return usage
    earlier = Run.objects.filter(session_id=slot.session_id).exclude(pk=slot.run_id)
    sums = earlier.aggregate(
        i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cache_read_tokens")
    )
    return replace(
        usage,
        input_tokens=_minus(usage.input_tokens, sums["i"]),
        output_tokens=_minus(usage.output_tokens, sums["o"]),
        cache_read_tokens=_minus(usage.cache_read_tokens, sums["c"]),
    )
