"""`manage.py runworker @backend-1`: register the worker row, then run its claim loop."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from tasks_app import actors, lifecycle
from tasks_app.choices import Lane, Tier
from workers_app.models import Worker, WorkerStatus
from workers_app.preflight import REFUSED_MARK
from workers_app.preflight import check as preflight_check
from workers_app.profiles import ProfileError, command_profile, get_profile, runnable_profile
from workers_app.runtime import WorkerLoop
from workers_app.sandbox import SandboxError, resolve_mode
from workers_app.workspace import is_git_repository, workspace_root

VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}
MAX_WORKER_ID = 64
OUTAGE_FIRST_PAUSE = 0.5  # a worker started while the database is down retries after this,
OUTAGE_PAUSE_CAP = 10.0  # doubling up to this
logger = logging.getLogger(__name__)


# The column holds a 32-bit integer on PostgreSQL; nobody runs this many agents on one worker.
MAX_CAPACITY = 1000
# A lease past this would overflow the date arithmetic of every claim (and nobody wants it).
MAX_LEASE_SECONDS = 30 * 86_400


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _capacity(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_CAPACITY:
        raise argparse.ArgumentTypeError(f"{value} must be at most {MAX_CAPACITY}")
    return value


def _seconds(minimum: float, maximum: float = float("inf")):
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
        if not value >= minimum or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{raw} must be a number of seconds ≥ {minimum:g}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{raw} must be a number of seconds ≤ {maximum:g}")
        return value

    return parse


def _once_the_database_answers(func):
    """`func()`, retried while the database is unreachable or locked.

    A worker started during an outage waits it out instead of exiting: runfactory gives up on a
    worker that fails three times right after starting. A missing table is no outage (run
    `migrate`) and is raised.
    """
    pause = OUTAGE_FIRST_PAUSE
    while True:
        try:
            return func()
        except (OperationalError, InterfaceError) as exc:
            if "no such " in str(exc):
                raise
            logger.warning("database unavailable (%s); retrying in %.1fs", exc, pause)
            connection.close()
            time.sleep(pause)
            pause = min(pause * 2, OUTAGE_PAUSE_CAP)


class Command(BaseCommand):
    help = (
        "Run a worker: claim tasks of its lane up to its capacity and drive an agent per task. "
        "SIGTERM/Ctrl-C drains (a second one forces)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "worker_id",
            nargs="?",
            help="Worker id such as @backend-1 (default: @<lane>-<hostname>).",
        )
        parser.add_argument("--lane", choices=Lane.values, help="Lane, to create the worker row.")
        parser.add_argument("--tier", choices=Tier.values, help="Tier, to create the worker row.")
        parser.add_argument(
            "--capacity", type=_capacity, help="How many tasks at once (sets capacity_limit)."
        )
        parser.add_argument(
            "--agent",
            help="Agent profile name (default: the worker row's, else VIBE_DEFAULT_AGENT).",
        )
        parser.add_argument(
            "--agent-command",
            help="Run this command as the agent: split like a shell, run without one, e.g. "
            '"python my_agent.py --fast".',
        )
        parser.add_argument("--once", action="store_true", help="Drain what is claimable, exit.")
        parser.add_argument("--max-tasks", type=_positive_int, help="Exit after N claims.")
        parser.add_argument(
            "--interval",
            type=_seconds(0.01),
            help="Idle poll in seconds (default 0.1 on SQLite, 2 behind LISTEN on PostgreSQL).",
        )
        parser.add_argument(
            "--lease",
            type=_seconds(1, MAX_LEASE_SECONDS),
            help="Lease in seconds (default VIBE_LEASE_SECONDS).",
        )
        parser.add_argument(
            "--grace",
            type=_seconds(0),
            default=20.0,
            help="On SIGTERM, seconds to let running agents finish before stopping them.",
        )
        parser.add_argument(
            "--timeout", type=_seconds(1), help="Agent time limit (default: the profile's)."
        )
        parser.add_argument(
            "--skip-preflight",
            action="store_true",
            help="Start even if the agent, its key, git identity or sandbox look broken "
            "(emergencies only: every task may fail).",
        )

    def handle(self, *args, **options) -> None:
        level = VERBOSITY_LEVELS.get(options["verbosity"], logging.INFO)
        logging.getLogger("workers_app").setLevel(level)
        worker_id = options["worker_id"] or self._default_id(options["lane"])
        if (
            len(worker_id) > MAX_WORKER_ID
            or not worker_id.strip()
            or any(c.isspace() for c in worker_id)
        ):
            raise CommandError(f"{worker_id!r} is not a worker id; use one like @backend-1")
        # Everything is checked before the row is created or touched: a bad flag changes nothing.
        remembered = _once_the_database_answers(
            lambda: (
                Worker.objects.filter(pk=worker_id).values_list("agent_profile", flat=True).first()
            )
        )
        profile_name = (
            options["agent"] or runnable_profile(remembered) or settings.VIBE_DEFAULT_AGENT
        )
        try:
            if options["agent_command"]:
                base = get_profile(options["agent"]) if options["agent"] else None
                profile = command_profile(options["agent_command"], base=base)
            else:
                profile = get_profile(profile_name)
        except ProfileError as exc:
            raise CommandError(str(exc)) from None
        if not profile.runnable:
            raise CommandError(
                f"agent profile {profile.name!r} has no command; pass --agent-command "
                '"PROGRAM ARGS…"'
            )
        try:
            sandbox_mode = resolve_mode()
        except SandboxError as exc:
            raise CommandError(f"{worker_id} {REFUSED_MARK} {exc}") from None
        if not options["skip_preflight"]:
            self._preflight(worker_id, profile, sandbox_mode)
        _once_the_database_answers(lambda: self._register(worker_id, options))
        _once_the_database_answers(
            lambda: Worker.objects.filter(pk=worker_id).update(agent_profile=profile.name[:60])
        )
        try:
            worker = _once_the_database_answers(
                lambda: WorkerLoop(
                    worker_id,
                    profile=profile,
                    lease_seconds=int(options["lease"]) if options["lease"] else None,
                    interval=options["interval"],
                    once=options["once"],
                    max_tasks=options["max_tasks"],
                    grace_seconds=options["grace"],
                    timeout=options["timeout"],
                )
            )
        except SandboxError as exc:
            raise CommandError(f"{worker_id} {REFUSED_MARK} {exc}") from None
        worker.install_signal_handlers()
        self.stdout.write(
            f"{worker_id}: working ({profile.name} agent, sandbox {worker.sandbox}); Ctrl-C to stop"
        )
        worker.run()
        self.stdout.write(f"{worker_id}: stopped cleanly")

    @staticmethod
    def _preflight(worker_id: str, profile, sandbox_mode: str) -> None:
        """Refuse to start, in one line, when every task would fail (runfactory shows it)."""
        root = workspace_root()
        problems = preflight_check(
            profile,
            sandbox_mode=sandbox_mode,
            will_commit=root is not None and root.is_dir() and is_git_repository(root),
        )
        if problems:
            raise CommandError(
                f"{worker_id} {REFUSED_MARK} {'; '.join(problems)} "
                "(fix it, or pass --skip-preflight)"
            )

    @staticmethod
    def _default_id(lane: str | None) -> str:
        if not lane:
            raise CommandError("name the worker (e.g. runworker @backend-1) or give its --lane")
        return f"@{lane}-{socket.gethostname().split('.')[0]}"[:MAX_WORKER_ID]

    def _register(self, worker_id: str, options: dict) -> Worker:
        """Create the row from the flags if it is missing; refuse flags that contradict it."""
        lane = options["lane"]
        with transaction.atomic():
            row = Worker.objects.select_for_update().filter(pk=worker_id).first()
            if row is None:
                if not lane:
                    raise CommandError(
                        f"worker {worker_id} does not exist; pass --lane (and optionally --tier, "
                        "--capacity) to create it"
                    )
                row = Worker.objects.create(
                    worker_id=worker_id,
                    lane=lane,
                    tier=options["tier"] or Tier.JUNIOR,
                    capacity_limit=options["capacity"] or 1,
                )
                self.stdout.write(f"created worker {worker_id} ({lane} lane)")
            elif lane and row.lane != lane:
                raise CommandError(
                    f"worker {worker_id} works the {row.lane} lane, not {lane}; pick another "
                    "worker id or drop --lane"
                )
            updates: dict = {
                "last_heartbeat": timezone.now(),
                "hostname": socket.gethostname()[:200],
                "pid": os.getpid(),
            }
            if options["capacity"]:
                updates["capacity_limit"] = options["capacity"]
            if options["tier"]:
                updates["tier"] = options["tier"]
            Worker.objects.filter(pk=worker_id).update(**updates)
        if row.status == WorkerStatus.OFFLINE:
            lifecycle.set_worker_status(
                worker_id, WorkerStatus.ONLINE, actor=actors.worker(worker_id)
            )
        elif row.status in (WorkerStatus.PAUSED, WorkerStatus.DRAINING):
            # A person's choice outlives restarts: only a resume brings it back to work.
            self.stdout.write(f"{worker_id} is {row.status}: it claims nothing until resumed")
        row.refresh_from_db()
        return row
