"""The worker loop: claim tasks of one lane, run an agent per task, report through the lifecycle.

The main thread claims, prepares, starts and collects: it polls the running agents every
`POLL_SECONDS`, writes their live output tails to their Run rows every `FLUSH_SECONDS`, reports
what they did and claims while it has room. An idle worker waits for work: on PostgreSQL it
LISTENs on the lifecycle's wake channel (the lifecycle NOTIFYs on commit) with polling as a
fallback; on SQLite it polls on a short, fixed interval with jitter. The interval never grows, so
a worker idle for hours is as quick as a fresh one.

Worktrees are prepared in a thread pool (fetch, `git worktree add`, VIBE_WORKTREE_SETUP), so no
lease waits behind them. Leases are kept by threads of their own (`leases.py`): the keeper renews
them and notices cancels, the watchdog and the fences make sure no agent outlives its lease.
What a finished run means is decided in `outcomes.py` (and `changes.conclude`); `reporting.py`
writes it to the Run row and the lifecycle. The loop gathers and hands on.

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
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from tasks_app import actors, lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task
from tasks_app.pipeline import AUDITOR_LANES

from . import budgets, changes, outcomes, runs, sandbox
from . import workspace as workspaces
from .adapters import BUILDER, REVIEWER, kind_for
from .launch import Launcher, git_author
from .leases import LeaseKeeper
from .models import Worker, WorkerStatus
from .profiles import AgentProfile
from .prompting import render_prompt, render_resume_prompt
from .reporting import Reporter
from .runner import RunResult
from .slots import Ending, Refused, Slot
from .timing import Backoff, Every
from .waker import Waker

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how often running agents are checked (a cheap waitpid)
FLUSH_SECONDS = 1.0  # how often transcripts and output tails are written to the Run rows
BUDGET_CHECK_SECONDS = 10.0  # how often a worker with room looks at today's spend
REAP_SECONDS = 1.0  # how often an idle worker looks for expired leases
SQLITE_INTERVAL = 0.1  # default idle poll on SQLite: p50 dispatch ~ half of it
LISTEN_FALLBACK_INTERVAL = 2.0  # default idle poll on PostgreSQL, behind LISTEN/NOTIFY
CONNECTION_CHECK_SECONDS = 1.0  # wake-ups renew stale DB connections at most this often
WAIT_SLICE = 0.25  # an idle wait checks the stop flag at least this often
FAULT_FIRST_PAUSE = 0.1  # after a fault the loop pauses this long, doubling, up to the cap
FAULT_PAUSE_CAP = 5.0


def _prepare_workspace(task: Task, stop: threading.Event) -> workspaces.Workspace:
    """In a preparer thread: the task's workspace; the thread's own connection is closed."""
    try:
        return workspaces.prepare(task, stop=stop)
    finally:
        connection.close()


class WorkerLoop:
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
        self.actor = actors.worker(worker_id)
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
        self.slots: dict[int, Slot] = {}
        self.claimed = 0
        self.stopping = False
        self.forced = False
        self._drain_deadline: float | None = None
        self.heartbeat_every = max(
            0.2, min(self.lease_seconds, settings.VIBE_HEARTBEAT_STALE_SECONDS) / 3
        )
        # The loop's periodic duties; busy agents are polled often, the queue every `interval`.
        self._busy_reaps = Every(self.heartbeat_every)
        self._idle_reaps = Every(REAP_SECONDS)
        self._flushes = Every(FLUSH_SECONDS)
        self._claim_checks = Every(self.interval)
        self._connection_checks = Every(CONNECTION_CHECK_SECONDS)
        self._budget_checks = Every(BUDGET_CHECK_SECONDS)
        self._found_nothing = False
        self._woken = False  # a NOTIFY for our lane arrived: claim without looking first
        self._over_budget = ""
        self.kind = kind_for(profile)
        self.sandbox = sandbox.resolve_mode()
        self.reports = Reporter(
            worker_id, kind=self.kind, failure_limit=settings.VIBE_WORKER_FAILURE_LIMIT
        )
        self._preparer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="worktree")
        self._faults = Backoff(FAULT_FIRST_PAUSE, FAULT_PAUSE_CAP)
        row = self._row()
        self.lane = row.lane
        self.capacity = row.capacity_limit
        self.waker = Waker(row.lane) if self.listen else None
        self.leases = LeaseKeeper(self)
        self.launcher = Launcher(
            worker_id=worker_id,
            profile=profile,
            kind=self.kind,
            sandbox_mode=self.sandbox,
            timeout=self.timeout,
            fences=self.leases.fences,
        )

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
        self.leases.start()
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
            self._shutdown()
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
        if self.reports.sweep_strays:
            self.reports.release_strays(self.slots)
        self._collect_prepared()
        self._collect_finished()
        now = time.monotonic()
        if self.slots and self._busy_reaps.due(now):
            # Busy workers reap too (the keeper renews; reaping is other workers' business).
            self._reap()
        if self.slots and self._flushes.due(now):
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
        if self._idle_reaps.due():
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
        if self._connection_checks.due():
            close_old_connections()

    # --- claiming -----------------------------------------------------------------------------

    def _claim_while_room(self) -> None:
        if len(self.slots) >= self.capacity:
            return
        if self._woken:
            self._claim_checks.put_off(time.monotonic())
        elif not self._claim_checks.due():
            return
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
                # It may have committed before the connection broke.
                self.reports.sweep_strays = True
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
            run = self._new_run(task, self._role(task))
        except DatabaseError:
            # Claimed, with no slot: given back once the database answers.
            self.reports.sweep_strays = True
            raise
        slot = Slot(task=task, token=task.claim_token, run=run, role=run.role)
        slot.lease_until = leased + self.lease_seconds
        slot.started_at = started_at
        if (stale := self.slots.get(task.pk)) is not None:
            # Its report waited out a fault while the reapers requeued it: it can never land.
            self._forget(stale)
            stale.run.mark("lease_lost")
        self.slots[task.pk] = slot
        logger.info("%s: claimed task %s (attempt %s)", self.worker_id, task.pk, run.attempt)
        try:
            self._launch(slot)
        except Exception as exc:
            self._start_failed(slot, exc)

    def _start_failed(self, slot: Slot, exc: Exception) -> None:
        """A run that could not start, as the failure type a person can act on."""
        if isinstance(exc, DatabaseError):
            # The database failed, not the task: it goes back unstarted once the database
            # answers again (the loop retries the release after a pause).
            note = "released: the database failed as it started"
            slot.ending = slot.ending or Ending("released", note=note)
            raise exc
        failure = outcomes.start_failure(exc)
        if failure is None:  # a poison task must not stop the worker
            logger.error("%s: could not start task %s", self.worker_id, slot.task.pk, exc_info=exc)
            failure = ("worker_error", f"{type(exc).__name__}: {exc}")
        self._give_up(slot, *failure)

    def _new_run(self, task: Task, role: str, *, note: str = "") -> Run:
        return Run.start(
            task,
            worker_id=self.worker_id,
            agent=self.profile.name,
            kind=self.profile.kind,
            role=role,
            sandbox=self.sandbox,
            note=note,
        )

    @staticmethod
    def _role(task: Task) -> str:
        return REVIEWER if task.stage or task.lane in AUDITOR_LANES else BUILDER

    def _launch(self, slot: Slot) -> None:
        task = slot.task
        if reason := budgets.no_money_to_start(task):
            raise Refused("budget_exceeded", reason)
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
                slot.note_setup(slot.workspace.setup)
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
                session = self.launcher.session_to_resume(slot.task, slot.role)
                prompt = render_resume_prompt(slot.task) if session else render_prompt(slot.task)
                self.launcher.spawn(slot, prompt, session)
                if slot.lost:  # the keeper found it cancelled while the agent was starting
                    slot.process.kill()
            except lifecycle.LeaseLost as exc:
                logger.warning("%s: %s; not starting its agent", self.worker_id, exc)
                self._lease_gone(slot)
            except Exception as exc:
                with contextlib.suppress(DatabaseError):  # the outage is said elsewhere
                    slot.note_setup(getattr(exc, "setup", None))
                if slot.lapsed or slot.lost:  # its setup was stopped with its claim
                    self._lease_gone(slot)
                elif self.stopping:  # its setup was stopped with the worker
                    self._record_released(slot)
                else:
                    self._start_failed(slot, exc)

    def _lease_gone(self, slot: Slot) -> None:
        """A claim lost (cancelled, taken over) or not renewed in time, its agent never started or
        stopped: the run is `cancelled` or `lease_lost`. A lapsed claim nobody else took is
        given back."""
        slot.stop_setup.set()
        lapsed = slot.lapsed or self.leases.fences.fired(slot)
        if not slot.lost:  # refused by the lifecycle before the keeper saw why
            with contextlib.suppress(DatabaseError):
                status = Task.objects.filter(pk=slot.task.pk).values_list("status", flat=True)
                slot.lost = "cancelled" if status.first() == Status.CANCELLED else ""
        ending = Ending(
            slot.lost or "lease_lost",
            give_back=lapsed and slot.lost != "cancelled",
            note=outcomes.LAPSED_NOTE,
        )
        self._end(slot, ending)

    def _record_released(self, slot: Slot) -> None:
        """A stop signal came while the worktree was prepared: give the task back unstarted."""
        self._end(slot, Ending("released", note="released: worker stopping"))

    # --- running and finishing ----------------------------------------------------------------

    def _collect_finished(self) -> None:
        """Report the runs that ended: agents that exited, and endings a fault left unreported."""
        for task_id, slot in list(self.slots.items()):
            if slot.ending is None:
                if slot.process is None or not slot.process.poll():
                    continue
                # A finished task frees a slot and may have made work (a retry, a rework).
                self._found_nothing = False
                self._claim_checks.soon()
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

    def _finish(self, slot: Slot) -> None:
        if slot.ending is None:
            slot.ending = self._conclude(slot)
            if slot.ending is None:  # a fresh session started in the same slot
                return
        self._report(slot)

    def _conclude(self, slot: Slot) -> Ending | None:
        """What the agent's run came to, without the database (but for a fresh session)."""
        assert slot.process is not None and slot.reader is not None  # an ended run had both
        result = slot.process.result()
        report = slot.reader.finish(result.exit_code, result.stdout, result.stderr)
        if not slot.lost and not slot.lapsed and self.leases.fences.fired(slot):
            logger.warning(
                "%s: could not renew the lease of task %s in time (or this worker stalled); "
                "its fence stopped the agent",
                self.worker_id,
                slot.task.pk,
            )
            slot.lapsed = True
        stop = outcomes.interrupted(lost=slot.lost, lapsed=slot.lapsed, releasing=slot.releasing)
        if stop is not None:
            return Ending(
                stop.outcome, result=result, report=report, give_back=stop.give_back, note=stop.note
            )
        if slot.session_id and report.resume_refused and not result.timed_out:
            self._start_fresh(slot, result, report)
            return None
        return changes.conclude(
            slot, result, report, author=git_author(self.worker_id), timeout=self.timeout
        )

    def _end(self, slot: Slot, ending: Ending) -> None:
        """Settle how the slot's run ended, then report it (see `_report`)."""
        if slot.ending is None:
            slot.ending = ending
        self._report(slot)

    def _report(self, slot: Slot) -> None:
        """Write the slot's ending to its Run row and its task, then let the slot go.

        Each step is done once: a database fault leaves the slot as it is, to be reported again
        by the loop after a pause, until it lands or the claim is truly lost.
        """
        end = slot.ending
        assert end is not None
        if not end.recorded:
            self.reports.record(slot, end)
            end.recorded = True
        if not end.landed:
            if end.outcome == "completed":
                self.reports.breaker.record_success()
                self._complete(slot, end.task_result or {})
            else:
                self.reports.settle(slot, end)
            end.landed = True
        self._forget(slot)

    def _start_fresh(self, slot: Slot, result: RunResult, report) -> None:
        """The agent could not resume its session: a new run with the full prompt."""
        note = (
            f"the agent could not resume session {slot.session_id} "
            f"({changes.first_line(report.error) or 'unknown session'}); started a fresh session"
        )
        runs.close_run(
            slot,
            result,
            "resume_refused",
            report=report,
            session_total=self.kind.usage_is_session_total,
        )
        logger.info("%s: task %s: %s", self.worker_id, slot.task.pk, note)
        if slot.prompt_path:
            slot.prompt_path.unlink(missing_ok=True)
            slot.prompt_path = None
        slot.run, slot.flushed = self._new_run(slot.task, slot.role, note=note), (0, 0)
        self.launcher.spawn(slot, render_prompt(slot.task), "")
        slot.note(note)

    def _complete(self, slot: Slot, result: dict) -> None:
        assert slot.ending is not None  # reported once decided
        task = slot.task
        following = None
        if self._may_claim() and not slot.ending.tries:
            # The slot this frees is filled in the same transaction: one write, not two.
            try:
                done = self.reports.call(
                    lifecycle.complete_and_claim,
                    slot,
                    result=result,
                    lease_seconds=self.lease_seconds,
                )
            except DatabaseError:
                self.reports.sweep_strays = True  # its claim may have committed unseen
                raise
            following = done[1] if isinstance(done, tuple) else None
        else:
            done = self.reports.call(lifecycle.complete, slot, result=result)
        if done:
            logger.info("%s: completed task %s", self.worker_id, task.pk)
        slot.ending.landed = True
        if following is None:
            return
        if self.stopping:  # a stop signal came while the claim was being written
            self.reports.release_unstarted(following, "released: worker stopping")
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
            self.reports.release_unstarted(following, "released: the worker could not start it")
            return
        self.claimed += 1

    def _may_claim(self) -> bool:
        if self.stopping or (self.max_tasks is not None and self.claimed >= self.max_tasks):
            return False
        return not self._daily_budget_reached()

    def _daily_budget_reached(self) -> bool:
        """Checked every BUDGET_CHECK_SECONDS: a full day's budget stops claims until midnight."""
        if self._budget_checks.due():
            reason = budgets.daily_budget_reached() or ""
            if reason and not self._over_budget:
                logger.warning("%s: %s; claiming nothing until it resets", self.worker_id, reason)
                budgets.notify_daily_budget()
            self._over_budget = reason
        return bool(self._over_budget)

    def _give_up(self, slot: Slot, error_type: str, error: str) -> None:
        """Record a failure that happened outside the agent (it may never have started)."""
        if slot.process is not None and slot.process.proc and slot.process.proc.poll() is None:
            slot.process.kill()
        try:
            self._end(slot, Ending(error_type, error=error))
        except lifecycle.LifecycleError as exc:
            logger.warning(
                "%s: could not record failure of %s: %s", self.worker_id, slot.task.pk, exc
            )
            self._forget(slot)

    def _forget(self, slot: Slot) -> None:
        if self.slots.get(slot.task.pk) is slot:
            del self.slots[slot.task.pk]
        self.leases.fences.drop(slot)  # a fence whose file is gone stops its agent at once
        if slot.prompt_path:
            slot.prompt_path.unlink(missing_ok=True)

    def _flush_tails(self) -> None:
        for slot in self.slots.values():
            if slot.process is not None:
                slot.flush()
                budgets.stop_if_spent(slot)

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

    def _shutdown(self) -> None:
        # Only reached with slots left when forced during a fault: one last try to give them
        # back (their leases run out otherwise, and the reapers put the tasks back).
        self.leases.stop()
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
                    slot.ending = Ending("released", result=result, note="released: worker stopped")
                self._report(slot)
            except Exception:
                logger.exception("%s: could not release task %s", self.worker_id, slot.task.pk)
            self._forget(slot)
        self.leases.fences.close()
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
        current = Worker.objects.filter(pk=self.worker_id).values_list("status", flat=True)
        if current.first() in only_from:
            try:
                lifecycle.set_worker_status(self.worker_id, status, actor=self.actor)
            except lifecycle.LifecycleError as exc:
                logger.info("%s: %s", self.worker_id, exc)

    def _row(self) -> Worker:
        return Worker.objects.get(pk=self.worker_id)
