"""The worker's clocks: periodic duties and the pauses after faults, on `time.monotonic()`."""

from __future__ import annotations

import random
import time


class Every:
    """A duty done at most once per `seconds`: `if self.reaps.due(now): reap()`.

    A fresh timer is due at once; `soon()` makes it due at the next look, `put_off()` moves
    the next time on (after a fault, or when another duty did this one's work).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.next = 0.0

    def due(self, now: float | None = None) -> bool:
        """True when the duty is due; the next one is then `seconds` away."""
        now = time.monotonic() if now is None else now
        if now < self.next:
            return False
        self.next = now + self.seconds
        return True

    def soon(self) -> None:
        self.next = 0.0

    def put_off(self, now: float, seconds: float | None = None) -> None:
        self.next = now + (self.seconds if seconds is None else seconds)

    def left(self, now: float) -> float:
        """Seconds until the duty is due (0 when it is)."""
        return max(0.0, self.next - now)


class Backoff:
    """Pauses after consecutive faults: `first`, doubling up to `cap`, with jitter; a success
    starts over."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.faults = 0

    def failed(self) -> float:
        pause = min(self.cap, self.first * 2 ** min(self.faults, 16))
        self.faults += 1
        return pause * random.uniform(0.8, 1.0)

    def succeeded(self) -> int:
        """Start over; returns how many faults in a row there had been."""
        faults, self.faults = self.faults, 0
        return faults
