"""How long ago, said the same way on cards, in the pool, in the admin and in chat: '42s', '5m',
'3h', '2d'."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60))


def age(value: datetime | timedelta, now: datetime | None = None) -> str:
    """The time since `value` (a moment, or an age already worked out) in its largest whole unit.

    A moment a little in the future (another machine's clock) reads as 0s, never as negative.
    """
    delta = value if isinstance(value, timedelta) else (now or timezone.now()) - value
    seconds = max(int(delta.total_seconds()), 0)
    for unit, size in _UNITS:
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def ago(value: datetime | timedelta | None, now: datetime | None = None) -> str:
    """'5m ago', or 'never' for something that has not happened."""
    return "never" if value is None else f"{age(value, now)} ago"
