"""The worker loop: claim tasks of one lane, run an agent per task, report through the lifecycle.

The main thread claims, prepares, starts and collects: it polls the running agents every
`POLL_SECONDS`, writes their live output tails to their Run rows every `FLUSH_SECONDS`, reports
what they did and claims while it has room. An idle worker waits for work: on PostgreSQL it
LISTENs on the lifecycle's wake channel (the lifecycle NOTIFYs on commit) with polling as a
fallback; on SQLite it polls on a short, fixed interval with jitter. The interval never grows, so
a worker idle for hours is as quick as a fresh one.

Worktrees are prepared in a thread pool (fetch, `git worktree add`, VIBE_WORKTREE_SETUP), so no
lease waits behind them. Leases are kept by a thread of their own, the keeper, with its own
database connection: it renews the worker's heartbeat and its leases every third of a lease and
looks every `HOLD_CHECK_SECONDS` (at once on PostgreSQL, through NOTIFY) whether each task is
still held, stopping the agent of one that was cancelled or taken over. Neither git, nor agents,
nor reporting ever hold it up.

At most one agent per task, whatever fails: every agent runs under a fence (`fence.py`), a tiny
process leading the agent's process group that kills the group when a deadline passes. A
watchdog thread that never touches the database pushes that deadline forward while the worker
runs, never past `LEASE_MARGIN` short of the lease's end: an agent whose lease could not be
renewed is dead before any other worker may take the task, and so is the agent of a worker that
was stopped (SIGSTOP) or hung, within `FENCE_STALL_SECONDS`.

The worker outlives its database. A fault anywhere in the loop (claim, reap, report, LISTEN, the
keeper's renewals) is logged, backed off (capped) and retried; a finished agent's outcome is
decided once, kept on its slot and reported again until it lands or its lease is truly lost, so
a database outage never turns a finished run into a failure nor runs a task twice.

Signals only set flags. The first SIGTERM/SIGINT stops claiming; running agents get a grace period
to finish, then their process groups are stopped and their tasks released to `pending` without
counting an attempt. A second signal stops them at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import Sum
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task, TaskHistory
from tasks_app.pipeline import AUDITOR_LANES

from . import budgets, diffs, outcomes, sandbox
from . import workspace as workspaces
from .adapters import BUILDER, REVIEWER, Reader, RunContext, kind_for
from .adapters.base import MAX_EVENT_TEXT, OUTPUT, Event, clip
from .breaker import CircuitBreaker
from .breaker import trip as breaker_trip
from .git import RemoteError
from .models import Worker as WorkerRow
from .models import WorkerStatus
from .profiles import AgentProfile, ProfileError, template_values
from .prompting import PromptError, render_prompt, render_resume_prompt
from .runner import AgentProcess, RunResult
from .transcript import TranscriptWriter

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how often running agents are checked (a cheap waitpid)
FLUSH_SECONDS = 1.0  # how often transcripts and output tails are written to the Run rows
BUDGET_CHECK_SECONDS = 10.0  # how often a worker with room looks at today's spend
REAP_SECONDS = 1.0  # how often an idle worker looks for expired leases
SQLITE_INTERVAL = 0.1  # default idle poll on SQLite: p50 dispatch ~ half of it
LISTEN_FALLBACK_INTERVAL = 2.0  # default idle poll on PostgreSQL, behind LISTEN/NOTIFY
CONNECTION_CHECK_SECONDS = 1.0  # wake-ups renew stale DB connections at most this often
WAIT_SLICE = 0.25  # an idle wait checks the stop flag at least this often
LEASE_MARGIN = 0.1  # an agent is stopped this share of a lease before its lease would run out
LEASE_WATCH_SECONDS = 0.5  # how often the watchdog looks at the leases
HOLD_CHECK_SECONDS = 1.0  # how often the keeper reads whether its tasks are still held (cancels)
FENCE_STALL_SECONDS = 5.0  # a worker silent this long (SIGSTOP, hung) has its agents killed
FENCE_REFRESH_SECONDS = 1.0  # the watchdog pushes a fence's deadline forward this often
FAULT_FIRST_PAUSE = 0.1  # after a fault the loop pauses this long, doubling, up to the cap
FAULT_PAUSE_CAP = 5.0
KEEPER_PAUSE_CAP = 1.0  # renewals are retried sooner: the leases are at stake
FENCE_SCRIPT = Path(__file__).with_name("fence.py")


def _prepare_workspace(task: Task, stop: threading.Event) -> workspaces.Workspace:
    """In a preparer thread: the task's workspace; the thread's own connection is closed."""
    try:
        return workspaces.prepare(task, stop=stop)
    finally:
        connection.close()


def _resolve_program(program: str, env: dict[str, str]) -> str:
    """The agent's program as a path, found on the agent's PATH; FileNotFoundError if not.

    Resolved before the sandbox wraps it, so a missing agent is `agent_missing`, not a
    sandbox failure, and inside the sandbox nothing depends on its PATH.
    """
    if os.sep in program:
        found = program if os.access(program, os.X_OK) and os.path.isfile(program) else None
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
    if not found:
        raise FileNotFoundError(2, "No such file or directory", program)
    return found


def _minus(total: int | None, earlier: int | None) -> int | None:
    return None if total is None else max(total - (earlier or 0), 0)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:120]


class Waker:
    """LISTEN on one of the lifecycle's channels over a dedicated psycopg connection.

    The wake channel (the default) announces claimable work by lane; the keeper listens on the
    cancel channel for the ids of cancelled tasks. Django's connection is not used: it may be
    closed between requests-worth of work, and LISTEN only lasts as long as its session. Any
    failure falls back to plain polling, and the listener reconnects on a later wait.
    """

    RECONNECT_SECONDS = 5.0

    def __init__(self, lane: str = "", *, channel: str = lifecycle.WAKE_CHANNEL) -> None:
        self.lane = lane
        self.channel = channel
        self.conn = None
        self._next_connect = 0.0

    def _connect(self) -> None:
        import psycopg

        db = settings.DATABASES["default"]
        params = {
            "dbname": db.get("NAME") or "",
            "user": db.get("USER") or None,
            "password": db.get("PASSWORD") or None,
            "host": db.get("HOST") or None,
            "port": db.get("PORT") or None,
        }
        # libpq settings from the URL (sslmode, connect_timeout, …) apply here too.
        django_only = {"isolation_level", "assume_role", "server_side_binding", "pool"}
        params.update({k: v for k, v in (db.get("OPTIONS") or {}).items() if k not in django_only})
        self.conn = psycopg.connect(
            **{k: v for k, v in params.items() if v is not None}, autocommit=True
        )
        self.conn.execute(f"LISTEN {self.channel}")

    def ensure(self) -> bool:
        if self.conn is not None and not self.conn.closed:
            return True
        if time.monotonic() < self._next_connect:
            return False
        try:
            self._connect()
            return True
        except Exception as exc:  # any failure means: poll instead
            logger.warning("LISTEN unavailable (%s); polling instead", exc)
            self.close()
            self._next_connect = time.monotonic() + self.RECONNECT_SECONDS
            return False

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; True when a task of our lane was announced."""
        if not self.ensure():
            time.sleep(timeout)
            return False
        return any(payload in (self.lane, "") for payload in self.notes(timeout))

    def notes(self, timeout: float) -> list[str]:
        """Block up to `timeout` seconds for a notification; the payloads that came ([] when the
        connection is down: call `ensure` first to know)."""
        if self.conn is None or self.conn.closed:
            return []
        try:
            return [note.payload for note in self.conn.notifies(timeout=timeout, stop_after=1)]
        except Exception as exc:
            logger.warning("LISTEN connection lost (%s); polling until it is back", exc)
            self.close()
            return []

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


class _Refused(Exception):
    """A run the worker will not start, with the failure type to record."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass
class _Ending:
    """How a run ended, decided once and kept until the lifecycle has it.

    `outcome` is the Run's: `completed`, `released`, `lease_lost`, `cancelled` or a failure type
    (the task's failed attempt). A database fault while reporting leaves the ending on its slot;
    the loop reports it again after a pause, so a finished agent's work is never lost nor turned
    into a failure by an outage.
    """

    outcome: str
    result: RunResult | None = None  # the agent's run, when it ran
    report: object | None = None  # what its reader made of it
    change: workspaces.Change | None = None
    task_result: dict | None = None  # for `completed`
    error: str = ""  # for a failure
    retry_after: float | None = None
    note: str = ""  # the history note of a release
    give_back: bool = False  # `lease_lost` of a claim we may still hold: release it
    recorded: bool = False  # the Run row has it
    landed: bool = False  # the lifecycle has it
    tries: int = 0  # reports that failed on a database fault (one may have committed unseen)


class _Backoff:
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


@dataclass
class _Slot:
    """One claimed task and its agent."""

    task: Task
    token: int
    run_id: int
    role: str = BUILDER
    process: AgentProcess | None = None
    workspace: workspaces.Workspace | None = None
    prompt_path: Path | None = None
    reader: Reader | None = None
    transcript: TranscriptWriter | None = None
    session_id: str = ""  # the session this run resumes
    head_before: str = ""  # a reviewer's starting commit, to tell whether it changed files
    preparing: Future | None = None  # its workspace, being prepared off the loop
    budget_left: Decimal | None = None  # what this run may spend of the task's budget
    over_budget: bool = False
    releasing: bool = False
    lease_until: float = 0.0  # time.monotonic() when the lease renewed last runs out
    lapsed: bool = False  # not renewed in time: its agent is stopped, its claim given up
    fenced: bool = False  # the watchdog has killed its agent
    lost: str = ""  # the keeper found the claim gone: `cancelled` or `lease_lost`
    fence_file: Path | None = None  # the fence's deadline, pushed forward by the watchdog
    fence_deadline: float = 0.0  # the deadline last written there
    ending: _Ending | None = None  # decided, waiting to be reported
    patch: str | None = None  # the builder's diff, for the Run row
    started_at: object = None  # when the claim was taken (aware datetime)
    stop_setup: threading.Event = field(default_factory=threading.Event)
    flushed: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)


class Worker:
    """Runs one worker row's claim loop until stopped; see the module docstring."""

    def __init__(
        self,
        worker_id: str,
        *,
        profile: AgentProfile,
        lease_seconds: int | None = None,
        interval: float | None = None,
        once: bool = False,
        max_tasks: int | None = None,
        grace_seconds: float = 20.0,
        timeout: float | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.actor = f"worker:{worker_id}"
        self.profile = profile
        self.lease_seconds = lease_seconds or settings.VIBE_LEASE_SECONDS
        self.listen = connection.vendor == "postgresql"
        if interval is None:
            interval = LISTEN_FALLBACK_INTERVAL if self.listen else SQLITE_INTERVAL
        self.interval = interval
        self.once = once
        self.max_tasks = max_tasks
        self.grace_seconds = grace_seconds
        self.timeout = timeout or profile.timeout
        self.slots: dict[int, _Slot] = {}
        self.claimed = 0
        self.stopping = False
        self.forced = False
        self._drain_deadline: float | None = None
        self._heartbeat_every = max(
            0.2, min(self.lease_seconds, settings.VIBE_HEARTBEAT_STALE_SECONDS) / 3
        )
        self._next_heartbeat = 0.0
        self._next_flush = 0.0
        self._next_reap = 0.0
        self._found_nothing = False
        self._woken = False  # a NOTIFY for our lane arrived: claim without looking first
        self._next_claim_check = 0.0
        self._next_connection_check = 0.0
        self._next_budget_check = 0.0
        self._over_budget = ""
        self.kind = kind_for(profile)
        self.sandbox = sandbox.resolve_mode()
        self.breaker = CircuitBreaker(settings.VIBE_WORKER_FAILURE_LIMIT)
        self._paused_itself = False  # until a person resumes it
        self._preparer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="worktree")
        self._watchdog_done = threading.Event()
        self._keeper_done = threading.Event()
        # Agents are stopped this long before their lease would run out.
        self._margin = self.lease_seconds * LEASE_MARGIN
        self._faults = _Backoff(FAULT_FIRST_PAUSE, FAULT_PAUSE_CAP)
        self._sweep_strays = False  # a claim may have committed unseen: look for it
        self._fence_dir: Path | None = None
        row = self._row()
        self.lane = row.lane
        self.capacity = row.capacity_limit
        self.waker = Waker(row.lane) if self.listen else None

    # --- signals -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only flags here: the loop does the work at its next tick.
        if self.stopping:
            self.forced = True
        self.stopping = True

    def request_stop(self, *, force: bool = False) -> None:
        self.stopping = True
        self.forced = self.forced or force

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (or drained with --once / --max-tasks); 0 after a clean drain."""
        logger.info(
            "%s: %s lane, capacity %s, agent %r (%s), sandbox %s, lease %ss, %s",
            self.worker_id,
            self.lane,
            self.capacity,
            self.profile.name,
            self.profile.kind,
            self.sandbox,
            self.lease_seconds,
            "LISTEN/NOTIFY" if self.listen else f"polling every {self.interval:g}s",
        )
        if self.waker:
            self.waker.ensure()  # LISTEN before the first look, so no NOTIFY falls in between
        threading.Thread(target=self._watch_leases, name="lease-watchdog", daemon=True).start()
        keeper = threading.Thread(target=self._keep_leases, name="lease-keeper", daemon=True)
        keeper.start()
        try:
            while True:
                try:
                    self._tick()
                    if self._done():
                        break
                    self._wait()
                except Exception as exc:
                    # The loop outlives any fault (a database restart or lock, a full disk):
                    # what was being done is kept and done again after a growing pause.
                    self._fault(exc)
                    if self._done():
                        break
                    continue
                if faults := self._faults.succeeded():
                    logger.warning("%s: working again after %s fault(s)", self.worker_id, faults)
        finally:
            self._shutdown(keeper)
        return 0

    def _fault(self, exc: Exception) -> None:
        pause = self._faults.failed()
        if self._faults.faults == 1:
            logger.exception("%s: error in the worker loop; retrying", self.worker_id)
        else:
            logger.warning(
                "%s: still failing (%s: %s); retrying in %.1fs",
                self.worker_id,
                type(exc).__name__,
                str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "",
                pause,
            )
        with contextlib.suppress(Exception):
            connection.close()  # a broken connection is replaced by the next query
        deadline = time.monotonic() + pause
        while not self.forced and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(WAIT_SLICE, remaining))

    def _done(self) -> bool:
        if self.slots:
            # A second signal while the database fails: what is left is given up; its leases
            # run out and the reapers put the tasks back.
            return self.forced and self._faults.faults > 0
        if self.stopping:
            return True
        if self.max_tasks is not None and self.claimed >= self.max_tasks:
            return True
        return self.once and self._found_nothing

    def _tick(self) -> None:
        if self._sweep_strays:
            self._release_strays()
        self._collect_prepared()
        self._collect_finished()
        now = time.monotonic()
        if self.slots and now >= self._next_heartbeat:
            # Busy workers reap too (the keeper renews; reaping is other workers' business).
            self._next_heartbeat = now + self._heartbeat_every
            self._reap()
        if self.slots and now >= self._next_flush:
            self._next_flush = now + FLUSH_SECONDS
            self._flush_tails()
        if self.stopping:
            self._drain()
            return
        self._claim_while_room()

    def _wait(self) -> None:
        if self.slots or self.stopping:
            if self.waker and not self.stopping and len(self.slots) < self.capacity:
                self._woken = self.waker.wait(POLL_SECONDS) or self._woken
            else:
                time.sleep(POLL_SECONDS if not self.stopping else 0.05)
            return
        if self.once and self._found_nothing:
            return
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + REAP_SECONDS
            self._reap()
        # Idle: a fixed interval with jitter, so workers started together spread out.
        deadline = time.monotonic() + self.interval * random.uniform(0.75, 1.25)
        while not self.stopping and (remaining := deadline - time.monotonic()) > 0:
            slice_ = min(WAIT_SLICE, remaining)
            if self.waker:
                if self.waker.wait(slice_):
                    self._woken = True
                    break
            else:
                time.sleep(slice_)
        self._refresh_connections()

    def _refresh_connections(self) -> None:
        """close_old_connections() on wake-ups, at most once a second.

        With CONN_HEALTH_CHECKS it costs a round trip before the next query; a worker woken many
        times a second by a busy queue pays it once a second, not before every claim.
        """
        now = time.monotonic()
        if now >= self._next_connection_check:
            self._next_connection_check = now + CONNECTION_CHECK_SECONDS
            close_old_connections()

    # --- claiming -----------------------------------------------------------------------------

    def _claim_while_room(self) -> None:
        now = time.monotonic()
        if len(self.slots) >= self.capacity or (not self._woken and now < self._next_claim_check):
            return  # busy agents are polled often; the queue only every `interval`
        self._next_claim_check = now + self.interval
        woken, self._woken = self._woken, False
        self._found_nothing = False
        while len(self.slots) < self.capacity and not self.stopping:
            if not self._may_claim():
                return
            # A plain read first: claim_next is a write (on SQLite it takes the database's write
            # lock), and workers polling ten times a second must not queue every writer behind
            # them. Right after a NOTIFY for our lane the read would only add a round trip.
            if not woken and not Task.objects.claimable(self.lane).exists():
                self._found_nothing = True
                return
            woken = False
            try:
                task = lifecycle.claim_next(self.worker_id, lease_seconds=self.lease_seconds)
            except DatabaseError:
                self._sweep_strays = True  # it may have committed before the connection broke
                raise
            if task is None:
                self._found_nothing = True
                return
            self.claimed += 1
            self._start(task)

    def _start(self, task: Task) -> None:
        leased = time.monotonic()
        started_at = timezone.now()
        try:
            run = Run.objects.create(
                task=task,
                worker_id=self.worker_id,
                attempt=task.attempt_count + 1,
                agent=self.profile.name[:60],
                argv=[],
                kind=self.profile.kind,
                role=self._role(task),
                sandbox=self.sandbox,
            )
        except DatabaseError:
            self._sweep_strays = True  # claimed, with no slot: given back once the database is
            raise
        slot = _Slot(task=task, token=task.claim_token, run_id=run.pk, role=run.role)
        slot.lease_until = leased + self.lease_seconds
        slot.started_at = started_at
        if (stale := self.slots.get(task.pk)) is not None:
            # Its report waited out a fault while the reapers requeued it: it can never land.
            self._forget(stale)
            Run.objects.filter(pk=stale.run_id).update(outcome="lease_lost")
        self.slots[task.pk] = slot
        logger.info("%s: claimed task %s (attempt %s)", self.worker_id, task.pk, run.attempt)
        try:
            self._launch(slot)
        except Exception as exc:
            self._start_failed(slot, exc)

    def _start_failed(self, slot: _Slot, exc: Exception) -> None:
        """A run that could not start, as the failure type a person can act on."""
        if isinstance(exc, DatabaseError):
            # The database failed, not the task: it goes back unstarted once the database
            # answers again (the loop retries the release after a pause).
            note = "released: the database failed as it started"
            slot.ending = slot.ending or _Ending("released", note=note)
            raise exc
        if isinstance(exc, _Refused):
            self._give_up(slot, exc.error_type, str(exc))
        elif isinstance(exc, sandbox.SandboxError):
            self._give_up(slot, "sandbox_error", str(exc))
        elif isinstance(exc, workspaces.WorkspaceError):
            self._give_up(slot, getattr(exc, "error_type", "workspace_error"), str(exc))
        elif isinstance(exc, PromptError | ProfileError):
            self._give_up(slot, "config_error", str(exc))
        elif isinstance(exc, FileNotFoundError):
            self._give_up(slot, "agent_missing", f"agent command not found: {exc.filename or exc}")
        elif isinstance(exc, PermissionError):
            self._give_up(
                slot, "agent_missing", f"agent command is not executable: {exc.filename or exc}"
            )
        else:  # a poison task must not stop the worker
            logger.error("%s: could not start task %s", self.worker_id, slot.task.pk, exc_info=exc)
            self._give_up(slot, "worker_error", f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _role(task: Task) -> str:
        return REVIEWER if task.stage or task.lane in AUDITOR_LANES else BUILDER

    def _launch(self, slot: _Slot) -> None:
        task = slot.task
        reason = budgets.task_budget_reached(task)
        left = budgets.budget_left(task)
        if not reason and left is not None and left < Decimal("0.01"):
            reason = f"the task has less than a cent of its VIBE_TASK_BUDGET_USD left (${left})"
        if reason:
            raise _Refused("budget_exceeded", reason)
        # Fetching, `git worktree add` and VIBE_WORKTREE_SETUP can take minutes: they run off
        # this loop, so the leases (this task's too) never wait behind them.
        slot.preparing = self._preparer.submit(_prepare_workspace, task, slot.stop_setup)

    def _collect_prepared(self) -> None:
        """Start the agents whose worktrees are ready, if their claims still hold."""
        for slot in list(self.slots.values()):
            if slot.preparing is None or not slot.preparing.done() or slot.ending is not None:
                continue
            future, slot.preparing = slot.preparing, None
            try:
                slot.workspace = future.result()
                self._note_setup(slot, slot.workspace.setup)
                if self.stopping:
                    self._record_released(slot)
                    continue
                if slot.lapsed or slot.lost:
                    raise lifecycle.LeaseLost(f"the claim of task {slot.task.pk} is gone")
                # The lease may have lapsed or the task been cancelled while git worked.
                renewed = time.monotonic()
                lifecycle.heartbeat(
                    slot.task.pk,
                    worker_id=self.worker_id,
                    token=slot.token,
                    lease_seconds=self.lease_seconds,
                )
                slot.lease_until = max(slot.lease_until, renewed + self.lease_seconds)
                session = self._session_to_resume(slot.task, slot.role)
                prompt = render_resume_prompt(slot.task) if session else render_prompt(slot.task)
                self._spawn(slot, prompt, session)
                if slot.lost:  # the keeper found it cancelled while the agent was starting
                    slot.process.kill()
            except lifecycle.LeaseLost as exc:
                logger.warning("%s: %s; not starting its agent", self.worker_id, exc)
                self._lease_gone(slot)
            except Exception as exc:
                with contextlib.suppress(DatabaseError):  # the outage is said elsewhere
                    self._note_setup(slot, getattr(exc, "setup", None))
                if slot.lapsed or slot.lost:  # its setup was stopped with its claim
                    self._lease_gone(slot)
                elif self.stopping:  # its setup was stopped with the worker
                    self._record_released(slot)
                else:
                    self._start_failed(slot, exc)

    def _note_setup(self, slot: _Slot, setup: workspaces.Setup | None) -> None:
        """VIBE_WORKTREE_SETUP's output, at the head of the run's transcript.

        The setup ran before the agent, in the preparer thread: its output reaches the Run row
        only now, on the loop.
        """
        if setup is None:
            return
        if slot.transcript is None:
            slot.transcript = TranscriptWriter(slot.run_id)
        slot.transcript.note(
            setup.describe(),
            setup=setup.command,
            exit_code=setup.exit_code,
            seconds=round(setup.seconds, 3),
        )
        slot.transcript.add(
            [
                Event(OUTPUT, clip(line, MAX_EVENT_TEXT), {"by": "setup"})
                for line in setup.output.splitlines()
                if line.strip()
            ]
        )
        slot.transcript.flush()

    def _lease_gone(self, slot: _Slot) -> None:
        """A claim lost (cancelled, taken over) or not renewed in time, its agent never started or
        stopped: the run is `cancelled` or `lease_lost`. A lapsed claim nobody else took is
        given back."""
        slot.stop_setup.set()
        lapsed = slot.lapsed or self._fence_fired(slot)
        if not slot.lost:  # refused by the lifecycle before the keeper saw why
            with contextlib.suppress(DatabaseError):
                status = Task.objects.filter(pk=slot.task.pk).values_list("status", flat=True)
                slot.lost = "cancelled" if status.first() == Status.CANCELLED else ""
        ending = _Ending(
            slot.lost or "lease_lost",
            give_back=lapsed and slot.lost != "cancelled",
            note="released: the worker could not renew its lease in time",
        )
        self._end(slot, ending)

    def _record_released(self, slot: _Slot) -> None:
        """A stop signal came while the worktree was prepared: give the task back unstarted."""
        self._end(slot, _Ending("released", note="released: worker stopping"))

    def _session_to_resume(self, task: Task, role: str) -> str:
        """The agent session of this task's last run, for a rework round or a retry."""
        if not self.kind.supports_resume:
            return ""
        last = (
            Run.objects.filter(task=task, agent=self.profile.name[:60], role=role)
            .exclude(session_id="")
            .order_by("-id")
            .values_list("session_id", flat=True)
            .first()
        )
        return last or ""

    def _spawn(self, slot: _Slot, prompt: str, session: str) -> None:
        """Start the agent for the slot's run: argv from its kind, fenced off, read live."""
        task, workspace = slot.task, slot.workspace
        assert workspace is not None
        home = workspaces.agent_home(task)
        if self.profile.uses_prompt_file:
            prompts_dir = home / "prompts"
            prompts_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"task-{task.pk}-", suffix=".md", dir=prompts_dir)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(prompt)
            slot.prompt_path = Path(name)
        slot.budget_left = budgets.budget_left(task)
        left = slot.budget_left if self.kind.supports_budget else None
        values = template_values(
            prompt_file=slot.prompt_path or "",
            task_id=task.pk,
            lane=task.lane,
            stage=task.stage,
            workspace=workspace.path,
            worker_id=self.worker_id,
            program=self.profile.program or self.kind.program,
            model=self.profile.model,
            max_turns=self.profile.max_turns,
            session_id=session,
            test_command=self.profile.test_command or settings.VIBE_TEST_COMMAND,
            budget_usd=f"{left:.2f}" if left is not None else "",
        )
        ctx = RunContext(
            role=slot.role,
            workspace=workspace.path,
            values=values,
            session_id=session,
            sandboxed=self.sandbox == "bwrap",
            as_root=hasattr(os, "geteuid") and os.geteuid() == 0,
            budget_usd=left,
            home=home,
        )
        self.kind.prepare(self.profile, ctx)
        argv = self.kind.argv(self.profile, ctx)
        extra = {
            **self.kind.env(self.profile, ctx),
            **self.profile.env,
            "VIBE_TASK_ID": str(task.pk),
            "VIBE_TASK_LANE": task.lane,
            "VIBE_TASK_STAGE": task.stage,
            "VIBE_TASK_ATTEMPT": str(task.attempt_count + 1),
            "VIBE_WORKER_ID": self.worker_id,
            "VIBE_WORKSPACE_DIR": str(workspace.path),
            "VIBE_PROMPT_FILE": str(slot.prompt_path or ""),
            # Temporary files in its own home: some CLIs refuse to put helpers under a shared
            # /tmp, and inside the sandbox /tmp is private anyway.
            "TMPDIR": str(self._tmpdir(home)),
        }
        name, email = workspaces.split_author(self._git_author())
        for role in ("AUTHOR", "COMMITTER"):
            # Agents that commit themselves commit as the factory, unless the worker says else.
            extra.setdefault(f"GIT_{role}_NAME", os.environ.get(f"GIT_{role}_NAME", name))
            extra.setdefault(f"GIT_{role}_EMAIL", os.environ.get(f"GIT_{role}_EMAIL", email))
        env = sandbox.agent_env(os.environ, prefixes=self.kind.env_prefixes, extra=extra, home=home)
        command = [_resolve_program(argv[0], env), *argv[1:]]
        if ctx.sandboxed:
            # A builder commits into the repository's git folder; a reviewer only reads it.
            git_dir = workspace.git_common_dir()
            shared = [git_dir] if git_dir else []
            command = sandbox.wrap(
                command,
                workspace=workspace.path,
                home=home,
                writable=shared if slot.role == BUILDER else [],
                readable=shared if slot.role == REVIEWER else [],
            )
        slot.session_id = session
        slot.head_before = workspace.head() if slot.role == REVIEWER else ""
        slot.reader = reader = self.kind.reader(self.profile, ctx)
        if slot.transcript is None or slot.transcript.run_id != slot.run_id:
            slot.transcript = TranscriptWriter(slot.run_id)  # the setup may have begun it
        transcript = slot.transcript
        if session:
            transcript.note(f"resuming the agent's session {session}")
        Run.objects.filter(pk=slot.run_id).update(
            argv=command,
            resumed=bool(session),
            session_id=session[:200],
            base_commit=workspace.base_commit[:64],
        )
        stdin = prompt.encode("utf-8") if self.profile.prompt == "stdin" else None
        slot.process = AgentProcess(
            self._fenced(slot, command),
            cwd=str(workspace.path),
            env=env,
            stdin_data=stdin,
            timeout=self.timeout,
            on_stdout=lambda line: transcript.add(reader.feed(line)),
            on_stderr=lambda line: transcript.add(reader.feed_stderr(line)),
        ).start()

    def _fenced(self, slot: _Slot, command: list[str]) -> list[str]:
        """The agent's command under its fence (`fence.py`), with the fence's first deadline."""
        if self._fence_dir is None:
            self._fence_dir = Path(tempfile.mkdtemp(prefix="vibe-fences-"))
        self._drop_fence(slot)  # a fresh session's run has a file of its own
        slot.fence_file = self._fence_dir / f"run-{slot.run_id}"
        slot.fence_deadline = 0.0
        self._push_fence(slot, time.monotonic())
        fence = [sys.executable, "-I", str(FENCE_SCRIPT), str(slot.fence_file), str(os.getpid())]
        return [*fence, "--", *command]

    def _push_fence(self, slot: _Slot, now: float) -> None:
        """Move the fence's deadline forward: a little past now, never past the lease's end
        less the margin. Written whole (a rename), so the fence never reads half of it."""
        if slot.fence_file is None:
            return
        deadline = min(now + FENCE_STALL_SECONDS, slot.lease_until - self._margin)
        refresh = min(FENCE_REFRESH_SECONDS, self._margin)
        if slot.fence_deadline and deadline - slot.fence_deadline < refresh:
            return
        slot.fence_deadline = deadline
        partial = slot.fence_file.with_name(slot.fence_file.name + ".new")
        partial.write_text(f"{deadline:.3f}\n", encoding="ascii")
        os.replace(partial, slot.fence_file)

    @staticmethod
    def _fence_fired(slot: _Slot) -> bool:
        """The fence killed the agent: its deadline passed before the worker moved it on."""
        if slot.fence_file is None:
            return False
        return slot.fence_file.with_name(slot.fence_file.name + ".fenced").exists()

    # --- running and finishing ----------------------------------------------------------------

    def _collect_finished(self) -> None:
        """Report the runs that ended: agents that exited, and endings a fault left unreported."""
        for task_id, slot in list(self.slots.items()):
            if slot.ending is None:
                if slot.process is None or not slot.process.poll():
                    continue
                # A finished task frees a slot and may have made work (a retry, a rework).
                self._found_nothing = False
                self._next_claim_check = 0.0
            try:
                self._finish(slot)
            except DatabaseError:
                raise  # the ending stays on its slot: reported again after a pause
            except Exception as exc:
                logger.exception("%s: error finishing task %s", self.worker_id, task_id)
                if slot.ending is not None and slot.ending.outcome == "worker_error":
                    self._forget(slot)  # reporting the fault itself failed: nothing more to do
                    continue
                slot.ending = None
                self._give_up(slot, "worker_error", f"{type(exc).__name__}: {exc}")

    def _finish(self, slot: _Slot) -> None:
        if slot.ending is None:
            slot.ending = self._conclude(slot)
            if slot.ending is None:  # a fresh session started in the same slot
                return
        self._report(slot)

    def _conclude(self, slot: _Slot) -> _Ending | None:
        """What the agent's run came to, without the database (but for a fresh session)."""
        result = slot.process.result()
        report = slot.reader.finish(result.exit_code, result.stdout, result.stderr)
        if slot.lost:  # cancelled, or taken over: nothing of it is reported
            return _Ending(slot.lost, result=result, report=report)
        if not slot.lapsed and self._fence_fired(slot):
            logger.warning(
                "%s: could not renew the lease of task %s in time (or this worker stalled); "
                "its fence stopped the agent",
                self.worker_id,
                slot.task.pk,
            )
            slot.lapsed = True
        if slot.lapsed:
            # Stopped for want of a renewed lease: whatever it did is not this worker's to
            # report; the claim, if nobody took it meanwhile, is given back.
            note = "released: the worker could not renew its lease in time"
            return _Ending("lease_lost", result=result, report=report, give_back=True, note=note)
        if slot.releasing:
            note = "released: worker shutting down"
            return _Ending("released", result=result, report=report, note=note)
        if slot.session_id and report.resume_refused and not result.timed_out:
            self._start_fresh(slot, result, report)
            return None
        finished = self._look_at_change(slot, result, report)
        outcome = outcomes.decide(finished)
        if slot.over_budget:
            spent = budgets.run_cost(report.usage)
            outcome = outcomes.Outcome(
                "budget_exceeded",
                f"the run was stopped at ${spent} of the ${slot.budget_left} left of the task's "
                "budget (VIBE_TASK_BUDGET_USD)",
            )
        return _Ending(
            outcome.error_type or "completed",
            result=result,
            report=finished.report,
            change=finished.change,
            task_result=outcome.result if outcome.ok else None,
            error=outcome.error,
            retry_after=outcome.retry_after,
        )

    def _end(self, slot: _Slot, ending: _Ending) -> None:
        """Settle how the slot's run ended, then report it (see `_report`)."""
        if slot.ending is None:
            slot.ending = ending
        self._report(slot)

    def _report(self, slot: _Slot) -> None:
        """Write the slot's ending to its Run row and its task, then let the slot go.

        Each step is done once: a database fault leaves the slot as it is, to be reported again
        by the loop after a pause, until it lands or the claim is truly lost.
        """
        end = slot.ending
        assert end is not None
        if not end.recorded:
            if end.result is not None:
                self._record_run(
                    slot, end.result, end.outcome, report=end.report, change=end.change
                )
            else:
                if slot.transcript is not None:
                    slot.transcript.flush()
                fields: dict = {"finished_at": timezone.now(), "outcome": end.outcome}
                if end.error:
                    fields["stderr_tail"] = end.error[-8000:]
                Run.objects.filter(pk=slot.run_id).update(**fields)
            end.recorded = True
        if not end.landed:
            self._settle(slot, end)
            end.landed = True
        self._forget(slot)

    def _settle(self, slot: _Slot, end: _Ending) -> None:
        """The lifecycle call for an ending; LeaseLost is logged (see `_call`), not raised."""
        if end.outcome == "completed":
            self.breaker.record_success()
            self._complete(slot, end.task_result or {})
        elif end.outcome == "cancelled":
            logger.info("%s: stopped the agent of cancelled task %s", self.worker_id, slot.task.pk)
        elif end.outcome == "lease_lost":
            if end.give_back:
                with contextlib.suppress(lifecycle.LeaseLost):
                    lifecycle.release(
                        slot.task.pk, worker_id=self.worker_id, token=slot.token, note=end.note
                    )
        elif end.outcome == "released":
            if self._call(lifecycle.release, slot, note=end.note):
                logger.info("%s: released task %s", self.worker_id, slot.task.pk)
        else:
            self._fail(slot, end.outcome, end.error, retry_after=end.retry_after)

    def _start_fresh(self, slot: _Slot, result: RunResult, report) -> None:
        """The agent could not resume its session: a new run with the full prompt."""
        note = (
            f"the agent could not resume session {slot.session_id} "
            f"({_first_line(report.error) or 'unknown session'}); started a fresh session"
        )
        self._record_run(slot, result, "resume_refused", report=report)
        logger.info("%s: task %s: %s", self.worker_id, slot.task.pk, note)
        if slot.prompt_path:
            slot.prompt_path.unlink(missing_ok=True)
            slot.prompt_path = None
        run = Run.objects.create(
            task=slot.task,
            worker_id=self.worker_id,
            attempt=slot.task.attempt_count + 1,
            agent=self.profile.name[:60],
            argv=[],
            kind=self.profile.kind,
            role=slot.role,
            sandbox=self.sandbox,
            note=note,
        )
        slot.run_id, slot.flushed = run.pk, (0, 0)
        self._spawn(slot, render_prompt(slot.task), "")
        slot.transcript.note(note)

    def _look_at_change(self, slot: _Slot, result: RunResult, report) -> outcomes.Finished:
        """Commit what a builder left; set aside what a reviewer changed."""
        workspace = slot.workspace
        change = None
        reviewer_changed = False
        snapshot: dict = {}
        if workspace is not None and workspace.is_git:
            if slot.role == BUILDER:
                attempt = slot.task.attempt_count + 1
                message = f"task #{slot.task.pk}: {_first_line(slot.task.goal)} (attempt {attempt})"
                if workspace.commit_all(author=self._git_author(), message=message):
                    slot.transcript.note("committed the changes the agent left")
                change = workspace.change()
                # Kept with the run: the web server that shows it may have no git, or another
                # clone, and the worktree moves on.
                slot.patch = diffs.patch(workspace.path, change.base, change.head)
                if not change.empty:  # to the shared remote, where reviewers on any host fetch it
                    try:
                        if workspace.push():
                            slot.transcript.note(f"pushed {workspace.branch} to {workspace.remote}")
                    except RemoteError as exc:
                        slot.transcript.note(f"could not push {workspace.branch}: {exc}")
                        if not report.error_type:  # the agent's own failure says more
                            report = replace(report, error_type=exc.error_type, error=str(exc))
                snapshot = {
                    **workspace.snapshot(),
                    "base_commit": change.base,
                    "changed_files": change.files,
                    "base_branch": workspace.base_branch,
                    "remote": workspace.remote if workspace.on_remote() else "",
                }
                conflicts = workspace.merge_conflicts()
                if conflicts is not None:
                    snapshot["conflicts"] = conflicts
            else:
                ref = f"refs/vibe/set-aside/task-{slot.task.pk}-run-{slot.run_id}"
                kept = workspace.set_aside(slot.head_before, ref)
                if kept:
                    reviewer_changed = True
                    slot.transcript.note(f"the reviewer changed files: set aside on {ref}", ref=ref)
                snapshot = workspace.snapshot()
                # Checked again at review time: the base may have moved since the build.
                conflicts = workspace.merge_conflicts()
                if conflicts is not None:
                    snapshot["conflicts"] = conflicts
        return outcomes.Finished(
            role=slot.role,
            lane=slot.task.lane,
            run=result,
            report=report,
            timeout=self.timeout,
            change=change,
            reviewer_changed=reviewer_changed,
            snapshot=snapshot,
        )

    @staticmethod
    def _tmpdir(home: Path) -> Path:
        path = home / "tmp"
        path.mkdir(exist_ok=True)
        return path

    def _git_author(self) -> str:
        return settings.VIBE_GIT_AUTHOR or self.worker_id

    def _complete(self, slot: _Slot, result: dict) -> None:
        task = slot.task
        following = None
        if self._may_claim() and not slot.ending.tries:
            # The slot this frees is filled in the same transaction: one write, not two.
            try:
                done = self._call(
                    lifecycle.complete_and_claim,
                    slot,
                    result=result,
                    lease_seconds=self.lease_seconds,
                )
            except DatabaseError:
                self._sweep_strays = True  # its claim may have committed unseen
                raise
            following = done[1] if isinstance(done, tuple) else None
        else:
            done = self._call(lifecycle.complete, slot, result=result)
        if done:
            logger.info("%s: completed task %s", self.worker_id, task.pk)
        slot.ending.landed = True
        if following is None:
            return
        if self.stopping:  # a stop signal came while the claim was being written
            self._release_unstarted(following, "released: worker stopping")
            return
        try:
            self._start(following)
        except DatabaseError:
            # Its slot, if it got one, gives it back once the database answers; if not, the
            # sweep for stray claims does. The completion has committed either way.
            logger.warning("%s: could not start task %s yet", self.worker_id, following.pk)
            return
        except Exception:
            # The completion has committed: a fault here is the next task's, never this one's.
            logger.exception("%s: could not start task %s", self.worker_id, following.pk)
            self.slots.pop(following.pk, None)
            self._release_unstarted(following, "released: the worker could not start it")
            return
        self.claimed += 1

    def _release_unstarted(self, task: Task, note: str) -> None:
        """Give back a task claimed but never started, without counting an attempt."""
        try:
            lifecycle.release(task.pk, worker_id=self.worker_id, token=task.claim_token, note=note)
        except lifecycle.LifecycleError as exc:
            logger.warning("%s: %s", self.worker_id, exc)
        except DatabaseError as exc:
            logger.warning("%s: could not release task %s yet: %s", self.worker_id, task.pk, exc)
            self._sweep_strays = True

    def _release_strays(self) -> None:
        """Give back the tasks this worker holds without knowing: claims that committed while
        the database connection broke, so their answer never came."""
        held = Task.objects.filter(status=Status.IN_PROGRESS, worker_id=self.worker_id)
        for task in held.exclude(pk__in=list(self.slots)):
            logger.warning(
                "%s: task %s was claimed unseen; giving it back", self.worker_id, task.pk
            )
            with contextlib.suppress(lifecycle.LifecycleError):
                lifecycle.release(
                    task.pk,
                    worker_id=self.worker_id,
                    token=task.claim_token,
                    note="released: claimed while the database failed, never started",
                )
        self._sweep_strays = False

    def _may_claim(self) -> bool:
        if self.stopping or (self.max_tasks is not None and self.claimed >= self.max_tasks):
            return False
        return not self._daily_budget_reached()

    def _daily_budget_reached(self) -> bool:
        """Checked every BUDGET_CHECK_SECONDS: a full day's budget stops claims until midnight."""
        now = time.monotonic()
        if now >= self._next_budget_check:
            self._next_budget_check = now + BUDGET_CHECK_SECONDS
            reason = budgets.daily_budget_reached() or ""
            if reason and not self._over_budget:
                logger.warning("%s: %s; claiming nothing until it resets", self.worker_id, reason)
                budgets.notify_daily_budget()
            self._over_budget = reason
        return bool(self._over_budget)

    def _call(self, func, slot: _Slot, **kwargs):
        """A lifecycle call for a held task, returning what it returns; a lost lease is logged,
        not raised, and returns None (True when an earlier try had landed after all)."""
        try:
            return func(slot.task.pk, worker_id=self.worker_id, token=slot.token, **kwargs)
        except lifecycle.LeaseLost as exc:
            if slot.ending is not None and slot.ending.tries and self._landed(slot):
                logger.info("%s: the report of task %s had landed", self.worker_id, slot.task.pk)
                return True
            logger.warning("%s: %s", self.worker_id, exc)
            status = Task.objects.filter(pk=slot.task.pk).values_list("status", flat=True).first()
            outcome = "cancelled" if status == Status.CANCELLED else "lease_lost"
            Run.objects.filter(pk=slot.run_id).update(outcome=outcome)
            return None
        except DatabaseError:
            if slot.ending is not None:
                slot.ending.tries += 1
            raise

    def _landed(self, slot: _Slot) -> bool:
        """After a report whose answer a broken connection lost: did it commit? Only this
        claim's own report moves the task out of `in_progress` under this worker's name."""
        return TaskHistory.objects.filter(
            task_id=slot.task.pk,
            from_status=Status.IN_PROGRESS,
            actor=self.actor,
            created_at__gte=slot.started_at or timezone.now(),
        ).exists()

    def _fail(
        self, slot: _Slot, error_type: str, error: str, *, retry_after: float | None = None
    ) -> None:
        if self._call(
            lifecycle.fail, slot, error_type=error_type, error=error, retry_after=retry_after
        ):
            logger.info("%s: task %s failed (%s)", self.worker_id, slot.task.pk, error_type)
        if self._paused_itself and error_type in lifecycle.INFRASTRUCTURE_ERRORS:
            # A run that was already going when the breaker tripped: the same fault, the same
            # remedy: its attempt is given back too.
            with contextlib.suppress(lifecycle.LifecycleError):
                lifecycle.give_back_attempt(
                    slot.task.pk, actor=self.actor, reason=f"{self.worker_id} paused itself"
                )
            return
        if self.breaker.record_failure(error_type, slot.task.pk, error):
            try:
                breaker_trip(self.worker_id, self.breaker, last_error=error)
                self._paused_itself = True
            finally:
                self.breaker.reset()

    def _give_up(self, slot: _Slot, error_type: str, error: str) -> None:
        """Record a failure that happened outside the agent (it may never have started)."""
        if slot.process is not None and slot.process.proc and slot.process.proc.poll() is None:
            slot.process.kill()
        try:
            self._end(slot, _Ending(error_type, error=error))
        except lifecycle.LifecycleError as exc:
            logger.warning(
                "%s: could not record failure of %s: %s", self.worker_id, slot.task.pk, exc
            )
            self._forget(slot)

    def _record_run(
        self,
        slot: _Slot,
        result: RunResult,
        outcome: str,
        *,
        report=None,
        change: workspaces.Change | None = None,
    ) -> None:
        fields: dict = {
            "finished_at": timezone.now(),
            "exit_code": result.exit_code,
            "duration_seconds": round(result.duration, 3),
            "stdout_tail": result.stdout,
            "stderr_tail": result.stderr,
            "outcome": outcome,
        }
        if report is not None:
            usage = self._own_usage(slot, report.usage)
            fields.update(
                model=usage.model[:100],
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cost_usd=budgets.run_cost(usage),
                turns=usage.turns,
            )
            if report.session_id:
                fields["session_id"] = report.session_id[:200]
        if change is not None:
            fields.update(head_commit=change.head[:64], changed_files=change.files)
        if slot.patch is not None:
            fields["patch"] = slot.patch
        if slot.transcript is not None:
            slot.transcript.flush()
        Run.objects.filter(pk=slot.run_id).update(**fields)

    def _own_usage(self, slot: _Slot, usage):
        """This run's share, for CLIs that report a resumed session's running total."""
        if not (self.kind.usage_is_session_total and slot.session_id):
            return usage
        earlier = Run.objects.filter(session_id=slot.session_id).exclude(pk=slot.run_id)
        sums = earlier.aggregate(
            i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cache_read_tokens")
        )
        return replace(
            usage,
            input_tokens=_minus(usage.input_tokens, sums["i"]),
            output_tokens=_minus(usage.output_tokens, sums["o"]),
            cache_read_tokens=_minus(usage.cache_read_tokens, sums["c"]),
        )

    def _forget(self, slot: _Slot) -> None:
        if self.slots.get(slot.task.pk) is slot:
            del self.slots[slot.task.pk]
        self._drop_fence(slot)  # a fence whose file is gone stops its agent at once
        if slot.prompt_path:
            slot.prompt_path.unlink(missing_ok=True)

    @staticmethod
    def _drop_fence(slot: _Slot) -> None:
        if slot.fence_file is not None:
            for suffix in ("", ".fenced", ".new"):
                slot.fence_file.with_name(slot.fence_file.name + suffix).unlink(missing_ok=True)

    def _flush_tails(self) -> None:
        for slot in self.slots.values():
            process = slot.process
            if process is None:
                continue
            if slot.transcript is not None:
                slot.transcript.flush()
            self._enforce_budget(slot)
            seen = (process.stdout.total, process.stderr.total)
            if seen == slot.flushed:
                continue
            slot.flushed = seen
            Run.objects.filter(pk=slot.run_id).update(
                stdout_tail=process.stdout.text(), stderr_tail=process.stderr.text()
            )

    def _enforce_budget(self, slot: _Slot) -> None:
        """Stop an agent whose run has spent what is left of its task's budget.

        For agents that take no cap of their own, from the usage they report as they go.
        """
        if slot.budget_left is None or slot.over_budget or slot.reader is None:
            return
        spent = budgets.run_cost(slot.reader.report.usage)
        if spent is not None and spent >= slot.budget_left and slot.process is not None:
            slot.over_budget = True
            slot.transcript.note(f"stopped: the run spent ${spent}, the task's budget is used up")
            slot.process.stop()

    # --- leases -------------------------------------------------------------------------------

    def _keep_leases(self) -> None:
        """The keeper, in a thread of its own with its own database connection.

        It renews the worker's heartbeat and its leases every third of a lease, and looks every
        HOLD_CHECK_SECONDS whether each task is still held (a cheap read), so the agent of a
        task cancelled or taken over stops within about a second, at once on PostgreSQL, where
        `cancel` NOTIFYs. The main thread may be busy with git, agents or a report the database
        refuses: the leases never wait for it. A fault here is retried after a short pause; if
        it lasts, the fences stop the agents before their leases run out.
        """
        backoff = _Backoff(FAULT_FIRST_PAUSE, KEEPER_PAUSE_CAP)
        listener = Waker(channel=lifecycle.CANCEL_CHANNEL) if self.listen else None
        next_renewal = next_check = 0.0
        try:
            while not self._keeper_done.is_set():
                now = time.monotonic()
                renewing = now >= next_renewal
                try:
                    if renewing:
                        self._renew()
                        next_renewal = now + self._heartbeat_every
                        next_check = now + HOLD_CHECK_SECONDS
                    elif now >= next_check:
                        self._check_holds()
                        next_check = now + HOLD_CHECK_SECONDS
                except Exception as exc:
                    pause = backoff.failed()
                    if backoff.faults == 1 or backoff.faults % 20 == 0:
                        logger.warning(
                            "%s: could not %s (%s: %s); retrying in %.1fs",
                            self.worker_id,
                            "renew the leases" if renewing else "check the claims",
                            type(exc).__name__,
                            (str(exc).strip().splitlines() or [""])[0][:200],
                            pause,
                        )
                    with contextlib.suppress(Exception):
                        connection.close()  # this thread's own: the next query reconnects
                    next_check = now + pause
                    if renewing:
                        next_renewal = now + pause  # soon again: two misses could cost a lease
                else:
                    if faults := backoff.succeeded():
                        logger.warning(
                            "%s: leases kept again after %s fault(s)", self.worker_id, faults
                        )
                timeout = max(0.0, min(next_renewal, next_check) - time.monotonic())
                if listener is not None and listener.ensure():
                    if {str(pk) for pk in self.slots} & set(listener.notes(timeout)):
                        next_check = 0.0  # one of ours was cancelled: look now
                else:
                    self._keeper_done.wait(timeout)
        finally:
            if listener is not None:
                listener.close()
            with contextlib.suppress(Exception):
                connection.close()

    def _renew(self) -> None:
        """The worker's heartbeat, its row's orders, and every lease it holds."""
        lifecycle.worker_heartbeat(self.worker_id)
        row = WorkerRow.objects.filter(pk=self.worker_id).values_list("status", "capacity_limit")
        row = row.first()
        if row is None:
            logger.error("%s: this worker's row was deleted; stopping", self.worker_id)
            self.request_stop()
            return
        status, self.capacity = row
        if status != WorkerStatus.PAUSED:
            self._paused_itself = False
        for slot in tuple(self.slots.values()):
            if slot.lapsed or slot.lost:
                continue  # its agent is stopped; renewing would hide that
            renewed = time.monotonic()
            try:
                lifecycle.heartbeat(
                    slot.task.pk,
                    worker_id=self.worker_id,
                    token=slot.token,
                    lease_seconds=self.lease_seconds,
                )
            except lifecycle.LeaseLost:
                status = Task.objects.filter(pk=slot.task.pk).values_list("status", flat=True)
                self._lose(slot, status.first())
                continue
            slot.lease_until = max(slot.lease_until, renewed + self.lease_seconds)

    def _check_holds(self) -> None:
        """Between renewals: is each running task still ours? (A read: no write lock.)"""
        slots = [slot for slot in tuple(self.slots.values()) if not slot.lost and not slot.ending]
        if not slots:
            return
        rows = Task.objects.filter(pk__in=[slot.task.pk for slot in slots])
        held = {
            pk: rest for pk, *rest in rows.values_list("pk", "status", "worker_id", "claim_token")
        }
        for slot in slots:
            status, worker_id, token = held.get(slot.task.pk, (None, None, None))
            if (status, worker_id, token) != (Status.IN_PROGRESS, self.worker_id, slot.token):
                self._lose(slot, status)

    def _lose(self, slot: _Slot, status: str | None) -> None:
        """The claim is gone (cancelled, or expired and taken over): stop the agent now, with
        its whole process group. The loop records the run, and reports nothing of it."""
        if slot.lost or slot.ending is not None:
            return  # a run that ended is the report's to settle: it will hear the same
        cancelled = status == Status.CANCELLED
        slot.lost = "cancelled" if cancelled else "lease_lost"
        slot.stop_setup.set()
        logger.warning(
            "%s: task %s %s; stopping its agent",
            self.worker_id,
            slot.task.pk,
            "was cancelled" if cancelled else "is no longer held by this worker",
        )
        if slot.process is not None:
            slot.process.kill()

    def _watch_leases(self) -> None:
        """In a thread of its own: push the fences' deadlines on, and stop the agents whose
        leases were not renewed in time.

        Past its lease, another worker's reaper may give the task to another agent, so this one
        must be gone before then. The keeper renews leases, but it may be stuck in the very call
        that failed (SQLite's busy timeout, a PostgreSQL server gone quiet); this thread never
        touches the database, so the stop does not wait for it. Should this whole process stop
        (SIGSTOP, a hang), the deadlines stop moving and the fences stop the agents.
        """
        margin = self._margin
        while not self._watchdog_done.wait(min(LEASE_WATCH_SECONDS, margin / 4)):
            now = time.monotonic()
            for slot in tuple(self.slots.values()):
                process = slot.process
                if slot.ending is not None or (
                    process is not None and process.proc.poll() is not None and not slot.lapsed
                ):
                    continue  # an agent that exited by itself: its result is real, keep it
                if not slot.lapsed and now >= slot.lease_until - margin:
                    slot.lapsed = True
                    slot.stop_setup.set()
                    logger.warning(
                        "%s: could not renew the lease of task %s in time; stopping its agent",
                        self.worker_id,
                        slot.task.pk,
                    )
                if slot.lapsed and process is not None and not slot.fenced:
                    slot.fenced = True
                    process.kill()
                elif process is not None and not slot.lapsed:
                    try:
                        self._push_fence(slot, now)
                    except OSError as exc:  # the fence then stops it: fail safe
                        logger.warning("%s: could not move a fence on: %s", self.worker_id, exc)

    def _reap(self) -> None:
        count = lifecycle.requeue_expired()
        if count:
            logger.info("%s: requeued %s task(s) whose lease expired", self.worker_id, count)

    # --- stopping -----------------------------------------------------------------------------

    def _drain(self) -> None:
        now = time.monotonic()
        if self._drain_deadline is None:
            self._drain_deadline = now + self.grace_seconds
            if self.slots:
                logger.info(
                    "%s: stopping; waiting up to %gs for %s running agent(s)",
                    self.worker_id,
                    self.grace_seconds,
                    len(self.slots),
                )
        for slot in self.slots.values():
            if slot.preparing is not None:
                slot.stop_setup.set()  # it would be released unstarted: no setup to finish
        if self.forced or now >= self._drain_deadline:
            for slot in self.slots.values():
                if slot.process is None:
                    continue
                if not slot.releasing:
                    slot.releasing = True
                    slot.process.stop()
                if self.forced:
                    slot.process.kill()

    def _shutdown(self, keeper: threading.Thread | None = None) -> None:
        # Only reached with slots left when forced during a fault: one last try to give them
        # back (their leases run out otherwise, and the reapers put the tasks back).
        self._keeper_done.set()
        if keeper is not None:
            keeper.join(timeout=2.0)  # its renewals must not outlive the releases below
        self._watchdog_done.set()
        for slot in self.slots.values():
            slot.stop_setup.set()
        self._preparer.shutdown(wait=False, cancel_futures=True)
        for slot in list(self.slots.values()):
            try:
                if slot.ending is None:
                    result = None
                    if slot.process is not None:
                        slot.process.kill()
                        slot.process.wait(5)
                        result = slot.process.result()
                    slot.ending = _Ending(
                        "released", result=result, note="released: worker stopped"
                    )
                self._report(slot)
            except Exception:
                logger.exception("%s: could not release task %s", self.worker_id, slot.task.pk)
            self._forget(slot)
        if self._fence_dir is not None:
            shutil.rmtree(self._fence_dir, ignore_errors=True)
        if self.waker:
            self.waker.close()
        try:
            self._set_status(
                WorkerStatus.OFFLINE, only_from=(WorkerStatus.ONLINE, WorkerStatus.DRAINING)
            )
        except Exception:
            logger.exception("%s: could not mark the worker offline", self.worker_id)
        logger.info("%s: stopped after %s task(s)", self.worker_id, self.claimed)

    def _set_status(self, status: str, *, only_from: tuple[str, ...]) -> None:
        current = WorkerRow.objects.filter(pk=self.worker_id).values_list("status", flat=True)
        if current.first() in only_from:
            try:
                lifecycle.set_worker_status(self.worker_id, status, actor=self.actor)
            except lifecycle.LifecycleError as exc:
                logger.info("%s: %s", self.worker_id, exc)

    def _row(self) -> WorkerRow:
        return WorkerRow.objects.get(pk=self.worker_id)
