"""One adapter per agent kind; `kind_for(profile)` picks it. See `base` for what one knows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .aider import AiderKind
from .base import BUILDER, REVIEWER, ROLES, AgentKind, Event, Reader, Report, RunContext, Usage
from .claude import ClaudeKind
from .codex import CodexKind
from .command import CommandKind, SimulatedKind
from .gemini import GeminiKind

if TYPE_CHECKING:
    from ..profiles import AgentProfile

KINDS: dict[str, AgentKind] = {
    kind.name: kind
    for kind in (
        ClaudeKind(),
        CodexKind(),
        GeminiKind(),
        AiderKind(),
        CommandKind(),
        SimulatedKind(),
    )
}


def kind_for(profile: AgentProfile) -> AgentKind:
    return KINDS[profile.kind]


__all__ = [
    "BUILDER",
    "KINDS",
    "REVIEWER",
    "ROLES",
    "AgentKind",
    "Event",
    "Reader",
    "Report",
    "RunContext",
    "Usage",
    "kind_for",
]
