"""`manage.py cleanworktrees`: remove the worktrees and scratch folders of finished work."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from workers_app import cleanup
from workers_app.git import WorkspaceError


class Command(BaseCommand):
    help = (
        "Remove this factory's worktrees (and scratch folders) of completed or cancelled tasks. "
        "Worktrees in use, of tasks a person may still retry, or holding uncommitted or unpushed "
        "work are kept, and the reason said; branches are always kept."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be removed; remove nothing."
        )

    def handle(self, *args, dry_run: bool, **options) -> None:
        try:
            results = cleanup.clean(dry_run=dry_run)
        except WorkspaceError as exc:
            raise CommandError(str(exc)) from None
        removed = 0
        for item in results:
            if item.removed:
                removed += 1
                self.stdout.write(f"removed {item.path} ({item.reason})")
            elif item.reason.startswith("would remove"):
                self.stdout.write(f"{item.path}: {item.reason}")
            elif item.holds_work or options["verbosity"] > 1 or dry_run:
                self.stdout.write(f"kept {item.path}: {item.reason}")
        verb = "would remove" if dry_run else "removed"
        count = sum(r.reason.startswith("would remove") for r in results) if dry_run else removed
        self.stdout.write(f"{verb} {count} of {len(results)} workspace folder(s)")
