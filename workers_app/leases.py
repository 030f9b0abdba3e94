"""Keeping a worker's claims: the keeper renews leases, the watchdog and the fences make sure no
agent outlives one.

The keeper is a thread with its own database connection: it renews the worker's heartbeat and
its leases every third of a lease and looks every `HOLD_CHECK_SECONDS` (at once on PostgreSQL,
through NOTIFY) whether each task is still held, stopping the agent of one that was cancelled or
taken over. Neither git, nor agents, nor reporting ever hold it up.

At most one agent per task, whatever fails: every agent runs under a fence (`fence.py`), a tiny
process leading the agent's process group that kills the group when a deadline passes. The
watchdog, a thread that never touches the database, pushes that deadline forward while the worker
runs, never past `LEASE_MARGIN` short of the lease's end: an agent whose lease could not be
renewed is dead before any other worker may take the task, and so is the agent of a worker that
was stopped (SIGSTOP) or hung, within `FENCE_STALL_SECONDS`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from django.db import connection

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Task

from .models import Worker, WorkerStatus
from .slots import Slot
from .timing import Backoff, Every
from .waker import Waker

if TYPE_CHECKING:
    from .runtime import WorkerLoop

logger = logging.getLogger(__name__)

LEASE_MARGIN = 0.1  # an agent is stopped this share of a lease before its lease would run out
LEASE_WATCH_SECONDS = 0.5  # how often the watchdog looks at the leases
HOLD_CHECK_SECONDS = 1.0  # how often the keeper reads whether its tasks are still held (cancels)
FENCE_STALL_SECONDS = 5.0  # a worker silent this long (SIGSTOP, hung) has its agents killed
FENCE_REFRESH_SECONDS = 1.0  # the watchdog pushes a fence's deadline forward this often
KEEPER_FIRST_PAUSE = 0.1  # after a fault the keeper pauses this long, doubling, up to the cap
KEEPER_PAUSE_CAP = 1.0  # sooner than the loop's: the leases are at stake
FENCE_SCRIPT = Path(__file__).with_name("fence.py")


class Fences:
    """The deadline files of one worker's fences; a file gone or past stops its agent."""

    def __init__(self, margin: float) -> None:
        self.margin = margin  # seconds short of a lease's end that its agent must be gone
        self._dir: Path | None = None

    def wrap(self, slot: Slot, command: list[str]) -> list[str]:
        """The agent's command under its fence, with the fence's first deadline."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="vibe-fences-"))
        self.drop(slot)  # a fresh session's run has a file of its own
        slot.fence_file = self._dir / f"run-{slot.run_id}"
        slot.fence_deadline = 0.0
        self.push(slot, time.monotonic())
        fence = [sys.executable, "-I", str(FENCE_SCRIPT), str(slot.fence_file), str(os.getpid())]
        return [*fence, "--", *command]

    def push(self, slot: Slot, now: float) -> None:
        """Move the fence's deadline forward: a little past now, never past the lease's end
        less the margin. Written whole (a rename), so the fence never reads half of it."""
        if slot.fence_file is None:
            return
        deadline = min(now + FENCE_STALL_SECONDS, slot.lease_until - self.margin)
        refresh = min(FENCE_REFRESH_SECONDS, self.margin)
        if slot.fence_deadline and deadline - slot.fence_deadline < refresh:
            return
        slot.fence_deadline = deadline
        partial = slot.fence_file.with_name(slot.fence_file.name + ".new")
        partial.write_text(f"{deadline:.3f}\n", encoding="ascii")
        os.replace(partial, slot.fence_file)

    @staticmethod
    def fired(slot: Slot) -> bool:
        """The fence killed the agent: its deadline passed before the worker moved it on."""
        if slot.fence_file is None:
            return False
        return slot.fence_file.with_name(slot.fence_file.name + ".fenced").exists()

    @staticmethod
    def drop(slot: Slot) -> None:
        if slot.fence_file is not None:
            for suffix in ("", ".fenced", ".new"):
                slot.fence_file.with_name(slot.fence_file.name + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


class LeaseKeeper:
    """The keeper and the watchdog threads of one worker loop, over the loop's slots."""

    def __init__(self, loop: WorkerLoop) -> None:
        self.loop = loop
        self.fences = Fences(loop.lease_seconds * LEASE_MARGIN)
        self._keeper_done = threading.Event()
        self._watchdog_done = threading.Event()
        self._keeper: threading.Thread | None = None

    def start(self) -> None:
        threading.Thread(target=self._watch, name="lease-watchdog", daemon=True).start()
        self._keeper = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)
        self._keeper.start()

    def stop(self) -> None:
        """Stop both threads; the keeper's renewals must not outlive the releases that follow."""
        self._keeper_done.set()
        if self._keeper is not None:
            self._keeper.join(timeout=2.0)
        self._watchdog_done.set()

    # --- the keeper ---------------------------------------------------------------------------

    def _keep(self) -> None:
        """Renew, check the holds, wait; a fault is retried after a short pause, and if it
        lasts, the fences stop the agents before their leases run out."""
        backoff = Backoff(KEEPER_FIRST_PAUSE, KEEPER_PAUSE_CAP)
        listener = Waker(channel=lifecycle.CANCEL_CHANNEL) if self.loop.listen else None
        renewals = Every(self.loop.heartbeat_every)
        checks = Every(HOLD_CHECK_SECONDS)
        try:
            while not self._keeper_done.is_set():
                now = time.monotonic()
                renewing = renewals.due(now)
                try:
                    if renewing:
                        self._renew()
                        checks.put_off(now)  # a renewal reads the holds too
                    elif checks.due(now):
                        self._check_holds()
                except Exception as exc:
                    pause = self._fault(backoff, exc, renewing)
                    checks.put_off(now, pause)
                    if renewing:
                        renewals.put_off(now, pause)  # soon again: two misses could cost a lease
                else:
                    if faults := backoff.succeeded():
                        logger.warning(
                            "%s: leases kept again after %s fault(s)", self.loop.worker_id, faults
                        )
                now = time.monotonic()
                self._wait(listener, min(renewals.left(now), checks.left(now)), checks)
        finally:
            if listener is not None:
                listener.close()
            with contextlib.suppress(Exception):
                connection.close()

    def _fault(self, backoff: Backoff, exc: Exception, renewing: bool) -> float:
        pause = backoff.failed()
        if backoff.faults == 1 or backoff.faults % 20 == 0:
            logger.warning(
                "%s: could not %s (%s: %s); retrying in %.1fs",
                self.loop.worker_id,
                "renew the leases" if renewing else "check the claims",
                type(exc).__name__,
                (str(exc).strip().splitlines() or [""])[0][:200],
                pause,
            )
        with contextlib.suppress(Exception):
            connection.close()  # this thread's own: the next query reconnects
        return pause

    def _wait(self, listener: Waker | None, timeout: float, checks: Every) -> None:
        """Sleep until the next duty; on PostgreSQL a cancel of one of ours cuts it short."""
        if listener is not None and listener.ensure():
            if {str(pk) for pk in self.loop.slots} & set(listener.notes(timeout)):
                checks.soon()  # one of ours was cancelled: look now
        else:
            self._keeper_done.wait(timeout)

    def _renew(self) -> None:
        """The worker's heartbeat, its row's orders, and every lease it holds."""
        loop = self.loop
        lifecycle.worker_heartbeat(loop.worker_id)
        rows = Worker.objects.filter(pk=loop.worker_id).values_list("status", "capacity_limit")
        row = rows.first()
        if row is None:
            logger.error("%s: this worker's row was deleted; stopping", loop.worker_id)
            loop.request_stop()
            return
        status, loop.capacity = row
        if status != WorkerStatus.PAUSED:
            loop.reports.paused_itself = False
        for slot in tuple(loop.slots.values()):
            if slot.lapsed or slot.lost:
                continue  # its agent is stopped; renewing would hide that
            renewed = time.monotonic()
            try:
                lifecycle.heartbeat(
                    slot.task.pk,
                    worker_id=loop.worker_id,
                    token=slot.token,
                    lease_seconds=loop.lease_seconds,
                )
            except lifecycle.LeaseLost:
                status = Task.objects.filter(pk=slot.task.pk).values_list("status", flat=True)
                self._lose(slot, status.first())
                continue
            slot.lease_until = max(slot.lease_until, renewed + loop.lease_seconds)

    def _check_holds(self) -> None:
        """Between renewals: is each running task still ours? (A read: no write lock.)"""
        slots = [s for s in tuple(self.loop.slots.values()) if not s.lost and not s.ending]
        if not slots:
            return
        rows = Task.objects.filter(pk__in=[slot.task.pk for slot in slots])
        held = {
            pk: rest for pk, *rest in rows.values_list("pk", "status", "worker_id", "claim_token")
        }
        for slot in slots:
            status, worker_id, token = held.get(slot.task.pk, (None, None, None))
            if (status, worker_id, token) != (Status.IN_PROGRESS, self.loop.worker_id, slot.token):
                self._lose(slot, status)

    def _lose(self, slot: Slot, status: str | None) -> None:
        """The claim is gone (cancelled, or expired and taken over): stop the agent now, with
        its whole process group. The loop records the run, and reports nothing of it."""
        if slot.lost or slot.ending is not None:
            return  # a run that ended is the report's to settle: it will hear the same
        cancelled = status == Status.CANCELLED
        slot.lost = "cancelled" if cancelled else "lease_lost"
        slot.stop_setup.set()
        logger.warning(
            "%s: task %s %s; stopping its agent",
            self.loop.worker_id,
            slot.task.pk,
            "was cancelled" if cancelled else "is no longer held by this worker",
        )
        if slot.process is not None:
            slot.process.kill()

    # --- the watchdog -------------------------------------------------------------------------

    def _watch(self) -> None:
        """Push the fences' deadlines on, and stop the agents whose leases were not renewed in
        time.

        Past its lease, another worker's reaper may give the task to another agent, so this one
        must be gone before then. The keeper renews leases, but it may be stuck in the very call
        that failed (SQLite's busy timeout, a PostgreSQL server gone quiet); this thread never
        touches the database, so the stop does not wait for it. Should this whole process stop
        (SIGSTOP, a hang), the deadlines stop moving and the fences stop the agents.
        """
        while not self._watchdog_done.wait(min(LEASE_WATCH_SECONDS, self.fences.margin / 4)):
            now = time.monotonic()
            for slot in tuple(self.loop.slots.values()):
                self._watch_one(slot, now)

    def _watch_one(self, slot: Slot, now: float) -> None:
        process = slot.process
        if slot.ending is not None or (
            process is not None
            and process.proc is not None
            and process.proc.poll() is not None
            and not slot.lapsed
        ):
            return  # an agent that exited by itself: its result is real, keep it
        if not slot.lapsed and now >= slot.lease_until - self.fences.margin:
            slot.lapsed = True
            slot.stop_setup.set()
            logger.warning(
                "%s: could not renew the lease of task %s in time; stopping its agent",
                self.loop.worker_id,
                slot.task.pk,
            )
        if slot.lapsed and process is not None and not slot.fenced:
            slot.fenced = True
            process.kill()
        elif process is not None and not slot.lapsed:
            try:
                self.fences.push(slot, now)
            except OSError as exc:  # the fence then stops it: fail safe
                logger.warning("%s: could not move a fence on: %s", self.loop.worker_id, exc)
