"""`python manage.py sendnotifications` — deliver the notification outbox to Slack and Discord.

A thin command around `chatops_app.outbox.Sender`: it says once which channels are configured
(rows for the others are kept, not sent), drains what is due, sleeps `--interval`, and repeats.
SIGTERM or Ctrl-C lets the send in flight finish and exits cleanly.
"""

from __future__ import annotations

import logging
import signal
from argparse import ArgumentTypeError

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from chatops_app.outbox import Sender

VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.INFO, 2: logging.INFO, 3: logging.DEBUG}


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ArgumentTypeError(f"interval {value!r} is not a number of seconds") from None
    if not 0.1 <= seconds <= 3600:
        raise ArgumentTypeError(f"interval {seconds:g} is out of range; use 0.1 to 3600 seconds")
    return seconds


class Command(BaseCommand):
    help = "Deliver pending Slack/Discord notifications, retrying with backoff when they are down."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="Send everything due now, then exit (for cron and tests).",
        )
        parser.add_argument(
            "--interval",
            type=_interval,
            default=5.0,
            help="Seconds to sleep when nothing is due (default 5).",
        )

    def handle(self, *args, once: bool, interval: float, verbosity: int, **options) -> None:
        logging.getLogger("chatops_app").setLevel(VERBOSITY_LEVELS.get(verbosity, logging.INFO))
        sender = Sender()

        def _stop(signum, frame) -> None:
            # Only a flag: the send in flight finishes and its outcome is recorded.
            sender.stop()

        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                lines = sender.describe()
            except DatabaseError as exc:
                raise CommandError(
                    f"cannot read the notification outbox ({exc}); "
                    "run `python manage.py migrate` first"
                ) from None
            for line in lines:
                self.stdout.write(line)
            if not any(channel.configured for channel in sender.channels):
                self.stdout.write(
                    "No chat channel is configured: notifications are kept until one is."
                )
            try:
                stats = sender.run(interval=interval, once=once)
            except DatabaseError as exc:
                raise CommandError(f"database error while sending notifications: {exc}") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write(
            f"sendnotifications: {stats.sent} sent, {stats.retrying} to retry later, "
            f"{stats.failed} failed for good."
        )
