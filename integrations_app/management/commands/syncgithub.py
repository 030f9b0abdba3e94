"""`python manage.py syncgithub` — open pull requests, comment on issues, poll GitHub.

A thin command around `integrations_app.sync.Syncer`: it says which repository it works on
and whether it polls, then runs passes until SIGTERM or Ctrl-C (the call in flight finishes;
a rate-limit wait ends at once). `--once` runs one pass, polling included, for cron and tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from integrations_app.github import NotConfigured
from integrations_app.sync import Syncer
from vibe_project import commands
from vibe_project.commands import set_log_level, stopped_by_signals


class Command(BaseCommand):
    help = "Open pull requests, send issue comments and poll GitHub for merges, reviews, issues."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="One pass (polling included), then exit."
        )
        parser.add_argument(
            "--interval",
            type=commands.interval,
            default=5.0,
            help="Seconds between passes when idle (default 5); polling follows "
            "VIBE_GITHUB_POLL_SECONDS.",
        )

    def handle(
        self, *args: Any, once: bool, interval: float, verbosity: int, **options: Any
    ) -> None:
        set_log_level("integrations_app", verbosity)
        if not settings.VIBE_GITHUB_TOKEN:
            raise CommandError("VIBE_GITHUB_TOKEN is not set; see docs/github.md")
        syncer = Syncer()
        try:
            lines = syncer.describe()
        except NotConfigured as exc:
            raise CommandError(str(exc)) from None
        for line in lines:
            self.stdout.write(line)
        try:
            with stopped_by_signals(syncer.stop):
                stats = syncer.run(interval=interval, once=once)
        except DatabaseError as exc:
            raise CommandError(f"database error in the GitHub sync: {exc}") from None
        self.stdout.write(
            f"syncgithub: {stats.opened} pull request(s) opened, {stats.comments} comment(s) "
            f"tried, {stats.events} event(s) retried, {stats.polled} event(s) from polling."
        )
        for error in stats.errors:
            self.stderr.write(error)
