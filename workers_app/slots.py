"""What the worker loop keeps per claimed task: its slot, and how its run ended."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tasks_app.models import Run, Task

from . import workspace as workspaces
from .adapters import BUILDER, Reader, Report
from .adapters.base import MAX_EVENT_TEXT, OUTPUT, Event, clip
from .runner import AgentProcess, RunResult
from .transcript import TranscriptWriter


class Refused(Exception):
    """A run the worker will not start, with the failure type to record."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass
class Ending:
    """How a run ended, decided once and kept until the lifecycle has it.

    `outcome` is the Run's: `completed`, `released`, `lease_lost`, `cancelled` or a failure type
    (the task's failed attempt). A database fault while reporting leaves the ending on its slot;
    the loop reports it again after a pause, so a finished agent's work is never lost nor turned
    into a failure by an outage.
    """

    outcome: str
    result: RunResult | None = None  # the agent's run, when it ran
    report: Report | None = None  # what its reader made of it
    change: workspaces.Change | None = None
    task_result: dict | None = None  # for `completed`
    error: str = ""  # for a failure
    retry_after: float | None = None
    note: str = ""  # the history note of a release
    give_back: bool = False  # `lease_lost` of a claim we may still hold: release it
    recorded: bool = False  # the Run row has it
    landed: bool = False  # the lifecycle has it
    tries: int = 0  # reports that failed on a database fault (one may have committed unseen)


@dataclass
class Slot:
    """One claimed task and its agent."""

    task: Task
    token: int
    run: Run
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
    ending: Ending | None = None  # decided, waiting to be reported
    patch: str | None = None  # the builder's diff, for the Run row
    started_at: object = None  # when the claim was taken (aware datetime)
    stop_setup: threading.Event = field(default_factory=threading.Event)
    flushed: tuple[int, int] = (0, 0)

    @property
    def run_id(self) -> int:
        return self.run.pk

    def note(self, text: str, **data: Any) -> None:
        """A worker's note in the run's transcript, once the run has one."""
        if self.transcript is not None:
            self.transcript.note(text, **data)

    def flush(self) -> None:
        """The transcript and the output tails so far, to the Run row (tails only when grown)."""
        if self.transcript is not None:
            self.transcript.flush()
        process = self.process
        if process is None or (process.stdout.total, process.stderr.total) == self.flushed:
            return
        self.flushed = (process.stdout.total, process.stderr.total)
        self.run.record(stdout_tail=process.stdout.text(), stderr_tail=process.stderr.text())

    def note_setup(self, setup: workspaces.Setup | None) -> None:
        """VIBE_WORKTREE_SETUP's output, at the head of the run's transcript.

        The setup ran before the agent, in the preparer thread: its output reaches the Run row
        only now, on the loop.
        """
        if setup is None:
            return
        if self.transcript is None:
            self.transcript = TranscriptWriter(self.run)
        self.transcript.note(
            setup.describe(),
            setup=setup.command,
            exit_code=setup.exit_code,
            seconds=round(setup.seconds, 3),
        )
        self.transcript.add(
            [
                Event(OUTPUT, clip(line, MAX_EVENT_TEXT), {"by": "setup"})
                for line in setup.output.splitlines()
                if line.strip()
            ]
        )
        self.transcript.flush()
