"""Starting an agent for a claimed task: its kind's argv, its environment, its sandbox, its fence.

The agent gets a home of its own (`workspace.agent_home`), the task's facts as `VIBE_*`
variables, the factory as its git author, and only the environment its kind asks for
(`sandbox.agent_env`). Its output is read live into the run's transcript.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings

from tasks_app.models import Run, Task

from . import budgets, sandbox
from . import workspace as workspaces
from .adapters import BUILDER, REVIEWER, RunContext
from .adapters.base import AgentKind
from .leases import Fences
from .profiles import AgentProfile, template_values
from .runner import AgentProcess
from .slots import Slot
from .transcript import TranscriptWriter


def git_author(worker_id: str) -> str:
    """Who the worker's commits are by: VIBE_GIT_AUTHOR, else the worker itself."""
    return settings.VIBE_GIT_AUTHOR or worker_id


def resolve_program(program: str, env: dict[str, str]) -> str:
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


class Launcher:
    """Starts one worker's agents, each for the run on its slot."""

    def __init__(
        self,
        *,
        worker_id: str,
        profile: AgentProfile,
        kind: AgentKind,
        sandbox_mode: str,
        timeout: float,
        fences: Fences,
    ) -> None:
        self.worker_id = worker_id
        self.profile = profile
        self.kind = kind
        self.sandbox_mode = sandbox_mode
        self.timeout = timeout
        self.fences = fences

    def session_to_resume(self, task: Task, role: str) -> str:
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

    def spawn(self, slot: Slot, prompt: str, session: str) -> None:
        """Start the agent for the slot's run: argv from its kind, fenced off, read live."""
        workspace = slot.workspace
        assert workspace is not None
        home = workspaces.agent_home(slot.task)
        if self.profile.uses_prompt_file:
            slot.prompt_path = self._prompt_file(slot.task, home, prompt)
        slot.budget_left = budgets.budget_left(slot.task)
        ctx = self._context(slot, workspace, home, session)
        self.kind.prepare(self.profile, ctx)
        argv = self.kind.argv(self.profile, ctx)
        env = self._env(slot, ctx, workspace, home)
        command = self._command(slot, ctx, workspace, [resolve_program(argv[0], env), *argv[1:]])
        slot.session_id = session
        slot.head_before = workspace.head() if slot.role == REVIEWER else ""
        slot.reader = reader = self.kind.reader(self.profile, ctx)
        if slot.transcript is None or slot.transcript.run_id != slot.run_id:
            slot.transcript = TranscriptWriter(slot.run)  # the setup may have begun it
        transcript = slot.transcript
        if session:
            transcript.note(f"resuming the agent's session {session}")
        slot.run.record(
            argv=command,
            resumed=bool(session),
            session_id=session[:200],
            base_commit=workspace.base_commit[:64],
        )
        stdin = prompt.encode("utf-8") if self.profile.prompt == "stdin" else None
        slot.process = AgentProcess(
            self.fences.wrap(slot, command),
            cwd=str(workspace.path),
            env=env,
            stdin_data=stdin,
            timeout=self.timeout,
            on_stdout=lambda line: transcript.add(reader.feed(line)),
            on_stderr=lambda line: transcript.add(reader.feed_stderr(line)),
        ).start()

    @staticmethod
    def _prompt_file(task: Task, home: Path, prompt: str) -> Path:
        prompts_dir = home / "prompts"
        prompts_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"task-{task.pk}-", suffix=".md", dir=prompts_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(prompt)
        return Path(name)

    def _context(
        self, slot: Slot, workspace: workspaces.Workspace, home: Path, session: str
    ) -> RunContext:
        task = slot.task
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
        return RunContext(
            role=slot.role,
            workspace=workspace.path,
            values=values,
            session_id=session,
            sandboxed=self.sandbox_mode == "bwrap",
            as_root=hasattr(os, "geteuid") and os.geteuid() == 0,
            budget_usd=left,
            home=home,
        )

    def _env(
        self, slot: Slot, ctx: RunContext, workspace: workspaces.Workspace, home: Path
    ) -> dict[str, str]:
        task = slot.task
        tmp = home / "tmp"
        tmp.mkdir(exist_ok=True)
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
            "TMPDIR": str(tmp),
        }
        name, email = workspaces.split_author(git_author(self.worker_id))
        for role in ("AUTHOR", "COMMITTER"):
            # Agents that commit themselves commit as the factory, unless the worker says else.
            extra.setdefault(f"GIT_{role}_NAME", os.environ.get(f"GIT_{role}_NAME", name))
            extra.setdefault(f"GIT_{role}_EMAIL", os.environ.get(f"GIT_{role}_EMAIL", email))
        return sandbox.agent_env(
            os.environ, prefixes=self.kind.env_prefixes, extra=extra, home=home
        )

    @staticmethod
    def _command(
        slot: Slot, ctx: RunContext, workspace: workspaces.Workspace, command: list[str]
    ) -> list[str]:
        if not ctx.sandboxed:
            return command
        assert ctx.home is not None  # a sandboxed run has a home of its own
        # A builder commits into the repository's git folder; a reviewer only reads it.
        git_dir = workspace.git_common_dir()
        shared = [git_dir] if git_dir else []
        return sandbox.wrap(
            command,
            workspace=workspace.path,
            home=ctx.home,
            writable=shared if slot.role == BUILDER else [],
            readable=shared if slot.role == REVIEWER else [],
        )
