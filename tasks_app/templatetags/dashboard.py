"""Small template helpers for the dashboard: short ages, labels, and the throughput chart's
geometry (worked out here so the SVG template stays plain markup)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone

from tasks_app.models import Status

register = template.Library()

CHART_WIDTH = 480
CHART_HEIGHT = 90
CHART_PAD_LEFT = 28
CHART_PAD_BOTTOM = 16


@register.filter
def short_age(value: datetime | timedelta | None) -> str:
    """'42s', '5m', '3h', '2d': an age that fits on a card."""
    if value is None:
        return "—"
    delta = value if isinstance(value, timedelta) else timezone.now() - value
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


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
def is_open(status: str) -> bool:
    """Whether Cancel applies: the lifecycle cancels any open task."""
    from tasks_app.models import OPEN_STATUSES

    return status in OPEN_STATUSES


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
    prefix = (actor or "").split(":", 1)[0]
    return FRONT_DOORS.get(prefix, prefix or "—")
