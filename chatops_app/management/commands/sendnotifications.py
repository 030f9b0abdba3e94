"""`python manage.py sendnotifications` — deliver the notification outbox to Slack and Discord.

A thin command around `chatops_app.outbox.Sender`: it says once which channels are configured
(rows for the others are kept, not sent), drains what is due, sleeps `--interval`, and repeats.
SIGTERM or Ctrl-C lets the send in flight finish and exits cleanly.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from chatops_app.outbox import Sender
from vibe_project import commands
from vibe_project.commands import set_log_level, stopped_by_signals


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
            type=commands.interval,
            default=5.0,
            help="Seconds to sleep when nothing is due (default 5).",
        )

    def handle(self, *args, once: bool, interval: float, verbosity: int, **options) -> None:
        set_log_level("chatops_app", verbosity)
        sender = Sender()
        with stopped_by_signals(sender.stop):
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
        self.stdout.write(
            f"sendnotifications: {stats.sent} sent, {stats.retrying} to retry later, "
            f"{stats.failed} failed for good."
        )
