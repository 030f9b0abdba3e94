"""Small template helpers for the dashboard: short ages, labels, and the throughput chart's
geometry (worked out here so the SVG template stays plain markup)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from functools import lru_cache

from django import template
from django.template.loader import render_to_string
from django.urls import get_script_prefix, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from tasks_app import actions, actors
from tasks_app.ages import age
from tasks_app.choices import Status
from tasks_app.choices import error_hint as hint_for

register = template.Library()

CHART_WIDTH = 480
CHART_HEIGHT = 90
CHART_PAD_LEFT = 28
CHART_PAD_BOTTOM = 16


@register.filter
def short_age(value: datetime | timedelta | None) -> str:
    """'42s', '5m', '3h', '2d': an age that fits on a card."""
    return "—" if value is None else age(value)


@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key, []) if mapping else []


@register.filter
def status_label(value: str) -> str:
    return Status(value).label if value in Status.values else (value or "—")


@register.simple_tag
def chart_geometry(series, hours: list[datetime], peak: int) -> dict:
    """Bar positions for one lane: completed stacked under failed, scaled to the shared peak."""
    count = max(len(hours), 1)
    plot_width = CHART_WIDTH - CHART_PAD_LEFT
    plot_height = CHART_HEIGHT - CHART_PAD_BOTTOM
    slot = plot_width / count
    bar = max(slot - 2, 1)
    scale = plot_height / peak if peak else 0
    bars = []
    for i, (done, failed) in enumerate(zip(series.completed, series.failed, strict=True)):
        x = CHART_PAD_LEFT + i * slot + 1
        done_h = done * scale
        failed_h = failed * scale
        bars.append(
            {
                "x": round(x, 1),
                "width": round(bar, 1),
                "done": done,
                "failed": failed,
                "done_y": round(plot_height - done_h, 1),
                "done_h": round(done_h, 1),
                "failed_y": round(plot_height - done_h - failed_h, 1),
                "failed_h": round(failed_h, 1),
                "hour": hours[i],
            }
        )
    ticks = [
        {"x": round(CHART_PAD_LEFT + i * slot + slot / 2, 1), "label": hours[i].strftime("%H")}
        for i in range(0, count, 6)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "plot_height": plot_height,
        "left": CHART_PAD_LEFT,
        "bars": bars,
        "ticks": ticks,
        "peak": peak,
        "label_y": CHART_HEIGHT - 3,
    }


@register.filter
def failing_now(task) -> bool:
    """Whether the task's last error is its current state, so a person should see it in red:
    dead letter, blocked, or pending out a failed attempt's backoff. Once the task moves on
    (running again, completed), the error belongs to its attempt in the runs list."""
    if not task.last_error_type:
        return False
    if task.status in (Status.DEAD_LETTER, Status.BLOCKED):
        return True
    return task.status == Status.PENDING and task.not_before is not None


@register.filter
def error_hint(error_type: str) -> str:
    """What a person can do about an error type ("" for an outcome that is no error)."""
    return hint_for(error_type or "")


@register.filter
def offers(task, action: str) -> bool:
    """Whether the action table offers `action` for the task as it is (the page asks `can` too)."""
    return actions.ACTIONS[action].offered(task)


FRONT_DOORS = {
    "user": "Web",
    "slack": "Slack",
    "discord": "Discord",
    "worker": "Worker",
    "cli": "CLI",
    "system": "System",
}


@register.filter
def front_door(actor: str) -> str:
    """Which front door an actor string came through: 'slack:U123' → 'Slack'."""
    kind = actors.parse(actor).kind
    return FRONT_DOORS.get(kind, kind or "—")


@register.filter
def web_url(value: str | None) -> str:
    """`value` when it is an http(s) address, else "": links made from outside data."""
    value = (value or "").strip()
    return value if value.startswith(("https://", "http://")) else ""


@register.filter
def delivery_badge(task) -> str | SafeString:
    """The task's delivery summary, with "pull request #12" a link to the pull request.

    Only an http(s) address becomes a link: the URL came from outside (GitHub's answer).
    """
    summary = task.delivery_summary
    words = f"pull request #{task.pr_number}" if task.pr_number else ""
    url = web_url(task.pr_url)
    if not words or words not in summary or not url:
        return summary
    before, _, after = summary.partition(words)
    return format_html(
        '{}<a href="{}" target="_blank" rel="noopener">{}'
        '<span class="visually-hidden"> (opens in a new tab)</span></a>{}',
        before,
        url,
        words,
        after,
    )


@register.filter
def task_path(pk: int) -> str:
    """`/tasks/<pk>/` without a URL reversal per card: the board renders hundreds of links a
    second, and `reverse()` was a fifth of its rendering time."""
    return f"{_task_prefix(get_script_prefix())}{pk}/"


@lru_cache(maxsize=8)
def _task_prefix(script_prefix: str) -> str:
    return reverse("tasks_app:task_detail", args=[0])[: -len("0/")]


# --- Cached task fragments ----------------------------------------------------------------------
# The board re-renders up to a few hundred cards every five seconds for every open tab, and
# almost none of them changed. A card's HTML depends only on the task's row (its `updated_at`
# moves with every lifecycle change), its age label, what the viewer may do and the board's
# filter, so it is kept in a small per-process LRU under exactly that key. The per-request CSRF
# field is the one part that must not be shared; it is left as a marker and filled in per page.

_FRAGMENTS: OrderedDict[tuple, str] = OrderedDict()
_FRAGMENTS_MAX = 5000
_FRAGMENTS_LOCK = threading.Lock()
_CSRF_MARK = "<!--vibe-csrf-->"


@register.simple_tag(takes_context=True)
def task_fragment(context, template_name: str, card) -> str:
    """Render `template_name` for one task card or row, from the LRU when nothing changed."""
    can = context.get("can") or {}
    push_base = context.get("detail_push_base") or "/?"
    next_url = context.get("next_url") or ""
    key = (
        template_name,
        card.pk,
        card.status,
        card.updated_at,
        short_age(card.created_at),
        getattr(card, "stages_key", ()),  # the reviews in its stage strip (stages.attach_stages)
        tuple(sorted(can.items())),
        push_base,
        next_url,
        get_script_prefix(),
    )
    with _FRAGMENTS_LOCK:
        html = _FRAGMENTS.get(key)
        if html is not None:
            _FRAGMENTS.move_to_end(key)
    if html is None:
        html = render_to_string(
            template_name,
            {
                "card": card,
                "can": can,
                "detail_push_base": push_base,
                "next_url": next_url,
                "csrf_input": mark_safe(_CSRF_MARK),
            },
        )
        with _FRAGMENTS_LOCK:
            _FRAGMENTS[key] = html
            while len(_FRAGMENTS) > _FRAGMENTS_MAX:
                _FRAGMENTS.popitem(last=False)
    return mark_safe(html.replace(_CSRF_MARK, str(context.get("csrf_input", ""))))
