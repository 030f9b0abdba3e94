"""What the long-running commands (sendnotifications, syncgithub, slacksocket) share.

Each runs a loop until SIGTERM or Ctrl-C; a signal only sets a flag, so the call in flight
finishes and its outcome is recorded. Their `--interval` and `-v` mean the same everywhere.
"""

from __future__ import annotations

import logging
import signal
from argparse import ArgumentTypeError
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_LOG_LEVELS = {0: logging.ERROR, 1: logging.INFO, 2: logging.INFO, 3: logging.DEBUG}


def interval(value: str) -> float:
    """An argparse type: seconds between passes, 0.1 to 3600."""
    try:
        seconds = float(value)
    except ValueError:
        raise ArgumentTypeError(f"interval {value!r} is not a number of seconds") from None
    if not 0.1 <= seconds <= 3600:
        raise ArgumentTypeError(f"interval {seconds:g} is out of range; use 0.1 to 3600 seconds")
    return seconds


def set_log_level(logger: str, verbosity: int) -> None:
    """`-v 0` errors only, the default says what it does, `-v 3` debug."""
    logging.getLogger(logger).setLevel(_LOG_LEVELS.get(verbosity, logging.INFO))


@contextmanager
def stopped_by_signals(stop: Callable[[], object]) -> Iterator[None]:
    """Call `stop` on SIGTERM or SIGINT while the block runs; the old handlers come back after."""

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
