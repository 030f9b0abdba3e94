"""`python manage.py syncgithub` — open pull requests, comment on issues, poll GitHub.

A thin command around `integrations_app.sync.Syncer`: it says which repository it works on
and whether it polls, then runs passes until SIGTERM or Ctrl-C (the call in flight finishes;
a rate-limit wait ends at once). `--once` runs one pass, polling included, for cron and tests.
"""

from __future__ import annotations

import logging
import signal
from argparse import ArgumentTypeError

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from integrations_app.github import NotConfigured
from integrations_app.sync import Syncer

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
    help = "Open pull requests, send issue comments and poll GitHub for merges, reviews, issues."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="One pass (polling included), then exit."
        )
        parser.add_argument(
            "--interval",
            type=_interval,
            default=5.0,
            help="Seconds between passes when idle (default 5); polling follows "
            "VIBE_GITHUB_POLL_SECONDS.",
        )

    def handle(self, *args, once: bool, interval: float, verbosity: int, **options) -> None:
        logging.getLogger("integrations_app").setLevel(
            VERBOSITY_LEVELS.get(verbosity, logging.INFO)
        )
        if not settings.VIBE_GITHUB_TOKEN:
            raise CommandError("VIBE_GITHUB_TOKEN is not set; see docs/github.md")
        syncer = Syncer()
        try:
            lines = syncer.describe()
        except NotConfigured as exc:
            raise CommandError(str(exc)) from None
        for line in lines:
            self.stdout.write(line)

        def _stop(signum, frame) -> None:
            syncer.stop()  # only a flag: the call in flight finishes

        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            stats = syncer.run(interval=interval, once=once)
        except DatabaseError as exc:
            raise CommandError(f"database error in the GitHub sync: {exc}") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write(
            f"syncgithub: {stats.opened} pull request(s) opened, {stats.comments} comment(s) "
            f"tried, {stats.events} event(s) retried, {stats.polled} event(s) from polling."
        )
        for error in stats.errors:
            self.stderr.write(error)
