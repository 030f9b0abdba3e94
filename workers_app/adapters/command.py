"""Any program as an agent (`command`), and the simulated agent.

A `command` profile runs its own argv for every role. Its output is plain text unless the
profile declares `output = "stream-json"`: then it is read like Claude Code's stream-json, so a
team's own wrapper can report usage, a session id and a verdict the same way.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .base import AgentKind, Reader, RunContext, TextReader
from .claude import ClaudeReader

if TYPE_CHECKING:
    from ..profiles import AgentProfile


class CommandKind(AgentKind):
    name = "command"
    description = "any program: the prompt on stdin or in a file, its words on stdout"

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        template = (profile.reviewer if ctx.role == "reviewer" else profile.builder) or profile.argv
        if ctx.session_id and profile.resume:
            template = profile.resume
        return profile.render(template, ctx.values) if template else profile.render_argv(ctx.values)

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return ClaudeReader() if profile.output == "stream-json" else TextReader()

    def version_argv(self, profile: AgentProfile) -> list[str]:
        return []  # a team's own program need not answer --version


class SimulatedKind(CommandKind):
    name = "simulated"
    description = "the simulator: no model, plausible verdicts"

    def env(self, profile: AgentProfile, ctx: RunContext) -> dict[str, str]:
        # Its knobs (VIBE_SIM_SLEEP, _SEED, _OUTCOME) are the worker's to pass: every other
        # VIBE_ variable stays out of agents' environments.
        return {k: v for k, v in os.environ.items() if k.startswith("VIBE_SIM_")}
