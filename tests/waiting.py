"""The one way tests wait for another thread or process: poll, then fail naming what never came."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout: float = 30, what: str = "", interval: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy and return that; after `timeout`
    seconds raise AssertionError saying what was awaited (a test's `finally` still cleans up)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(interval)
