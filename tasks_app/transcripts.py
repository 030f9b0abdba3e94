"""A task's runs and their transcripts as the CLI shows them (`vibe task --transcript`, --json)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import costs
from .costs import json_usd as _usd
from .models import Run, RunEvent

TRANSCRIPT_RESULT_LINES = 12


def _run_ids(task_id: int) -> list[int]:
    """A task's runs in the order the page and `--transcript` number them."""
    return list(
        Run.objects.filter(task_id=task_id)
        .order_by("started_at", "id")
        .values_list("id", flat=True)
    )


def _events_by_run(runs: list[Run]) -> dict[int, list[RunEvent]]:
    """Every event of the runs, in order, in one query."""
    grouped: dict[int, list[RunEvent]] = {run.pk: [] for run in runs}
    if runs:
        for event in RunEvent.objects.filter(run__in=runs).order_by("run_id", "seq"):
            grouped[event.run_id].append(event)
    return grouped


def _run_data(run: Run, events: list[RunEvent]) -> dict:
    return {
        "id": run.pk,
        "attempt": run.attempt,
        "role": run.role,
        "kind": run.kind,
        "agent": run.agent,
        "worker_id": run.worker_id,
        "sandbox": run.sandbox,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "exit_code": run.exit_code,
        "duration_seconds": run.duration_seconds,
        "outcome": run.outcome,
        "note": run.note,
        "session_id": run.session_id,
        "resumed": run.resumed,
        "model": run.model,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cache_read_tokens": run.cache_read_tokens,
        "cache_write_tokens": run.cache_write_tokens,
        "cost_usd": _usd(run.cost_usd),
        "turns": run.turns,
        "base_commit": run.base_commit,
        "head_commit": run.head_commit,
        "changed_files": run.changed_files,
        "event_count": run.event_count,
        "events": [
            {
                "seq": e.seq,
                "kind": e.kind,
                "text": e.text,
                "data": e.data,
                "at": e.created_at.isoformat(),
            }
            for e in events
        ],
    }


def _indent(text: str, prefix: str, limit: int | None = None) -> list[str]:
    """The text's lines, the first after `prefix`, the rest lined up under it."""
    lines = text.splitlines() or [""]
    kept = lines if limit is None else lines[:limit]
    pad = " " * len(prefix)
    out = [(prefix if i == 0 else pad) + line for i, line in enumerate(kept)]
    if limit is not None and len(lines) > limit:
        out.append(f"{pad}[… {len(lines) - limit} more lines]")
    return out


def _run_transcript_lines(number: int, run: Run, events: list[RunEvent]) -> list[str]:
    """One run as a terminal reads it: a header, its usage, then one block per event."""
    lines = _run_heading(number, run)
    if not events:
        lines.append("   (no transcript recorded)")
    for event in events:
        lines += _event_lines(event)
    return lines


def _run_heading(number: int, run: Run) -> list[str]:
    state = "running" if run.is_running else f"exit {run.exit_code}"
    head = " · ".join(
        part
        for part in (
            f"Run {number}",
            run.role,
            run.agent or run.kind,
            f"attempt {run.attempt}",
            f"on {run.worker_id}" if run.worker_id else "",
            state,
            run.outcome,
        )
        if part
    )
    usage = [
        run.model,
        f"{run.input_tokens:,} in" if run.input_tokens is not None else "",
        f"{run.output_tokens:,} out" if run.output_tokens is not None else "",
        costs.format_usd(run.cost_usd) if run.cost_usd is not None else "",
        f"{run.turns} turns" if run.turns is not None else "",
        f"session {run.session_id}" if run.session_id else "",
        "resumed" if run.resumed else "",
    ]
    lines = ["", f"── {head}"]
    if any(usage):
        lines.append("   " + " · ".join(part for part in usage if part))
    if run.note:
        lines += _indent(run.note, "   note: ")
    return lines


def _tool_call(tag: str, event: RunEvent, data: dict[str, Any]) -> list[str]:
    return [f"{tag} ▸ {data.get('name') or 'tool'}: {event.text}"]


def _tool_result(tag: str, event: RunEvent, data: dict[str, Any]) -> list[str]:
    label = "error" if data.get("is_error") else "result"
    return [f"{tag}   ↳ {label}:", *_indent(event.text, "      ", TRANSCRIPT_RESULT_LINES)]


def _error(tag: str, event: RunEvent, data: dict[str, Any]) -> list[str]:
    return _indent(event.text, f"{tag} ERROR: ")


def _output(tag: str, event: RunEvent, data: dict[str, Any]) -> list[str]:
    return [f"{tag} {'!' if event.kind == 'stderr' else '|'} {event.text}"]


def _usage(tag: str, event: RunEvent, data: dict[str, Any]) -> list[str]:
    return [f"{tag} usage: " + ", ".join(f"{k} {v}" for k, v in data.items())]


def _message(tag: str, event: RunEvent, data: dict[str, Any]) -> list[str]:
    return _indent(event.text, f"{tag} ")


# How each kind of event reads in a terminal; other kinds show their kind before the text.
_EVENT_LINES: dict[str, Callable[[str, RunEvent, dict[str, Any]], list[str]]] = {
    "tool_call": _tool_call,
    "tool_result": _tool_result,
    "error": _error,
    "output": _output,
    "stderr": _output,
    "usage": _usage,
    "message": _message,
}


def _event_lines(event: RunEvent) -> list[str]:
    data = event.data if isinstance(event.data, dict) else {}
    tag = f"[{event.seq}]"
    lines = _EVENT_LINES.get(event.kind)
    if lines is None:
        return _indent(event.text, f"{tag} ({event.kind}) ")
    return lines(tag, event, data)
