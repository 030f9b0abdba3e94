"""Aider, one message from a file (`--message-file`), plain-text output.

Builder: answers yes to everything, never touches .gitignore (`.aider*` files are kept out of
the diff through `.git/info/exclude`), no update check, analytics or browser login. Reviewer:
`--chat-mode ask --no-auto-commits`. Aider exits 0 on a provider error, so its output is read
for `litellm.*Error` and "not able to authenticate"; its `Tokens: … Cost: $…` line is the usage.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING

from .base import (
    ERROR,
    OUTPUT,
    USAGE,
    AgentKind,
    Event,
    Reader,
    RunContext,
    TextReader,
    classify_error_text,
    to_decimal,
)

if TYPE_CHECKING:
    from ..profiles import AgentProfile

TOKENS = re.compile(
    r"Tokens:\s*(?P<sent>[\d.,]+)(?P<sent_k>k?)\s*sent"
    r"(?:,\s*(?P<cached>[\d.,]+)(?P<cached_k>k?)\s*cache[^,]*)?"
    r".*?(?P<recv>[\d.,]+)(?P<recv_k>k?)\s*received"
    r"(?:.*?Cost:\s*\$(?P<cost>[\d.]+)\s*message)?",
    re.IGNORECASE,
)
PROVIDER_ERROR = re.compile(r"litellm\.\w*Error|not able to authenticate", re.IGNORECASE)


def _count(number: str, k: str) -> int:
    value = Decimal(number.replace(",", ""))
    return int(value * 1000) if k else int(value)


class AiderReader(TextReader):
    def __init__(self) -> None:
        super().__init__()
        self._lines: list[str] = []

    def feed(self, line: str) -> list[Event]:
        if not line.strip():
            return []
        self._lines.append(line)
        del self._lines[:-400]
        match = TOKENS.search(line)
        if match:
            usage = self.report.usage
            usage.add_tokens(
                input=_count(match["sent"], match["sent_k"]),
                output=_count(match["recv"], match["recv_k"]),
                cache_read=_count(match["cached"], match["cached_k"]) if match["cached"] else None,
            )
            cost = to_decimal(match["cost"])
            if cost is not None:
                usage.cost_usd = (usage.cost_usd or Decimal(0)) + cost
            usage.turns = (usage.turns or 0) + 1
            return [Event(USAGE, line.strip(), usage.as_data())]
        if PROVIDER_ERROR.search(line):
            self.report.success = False
            self.report.error = line.strip()
            self.report.error_type = classify_error_text(line) or "agent_exit"
            return [Event(ERROR, line.strip())]
        return [Event(OUTPUT, line)]

    def feed_stderr(self, line: str) -> list[Event]:
        if PROVIDER_ERROR.search(line):
            return self.feed(line)
        return super().feed_stderr(line)

    def finish(self, exit_code, stdout, stderr):
        self.report.final_text = stdout
        return self.report


class AiderKind(AgentKind):
    name = "aider"
    program = "aider"
    description = "Aider"
    key_env = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY")
    env_prefixes = ("AIDER_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "OPENROUTER_")

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        custom = profile.reviewer if ctx.role == "reviewer" else profile.builder
        if custom:
            return profile.render(custom, ctx.values)
        argv = [
            profile.program or self.program,
            "--yes-always",
            "--no-gitignore",
            "--no-check-update",
            "--no-analytics",
            "--no-show-release-notes",
            "--no-pretty",
            "--no-stream",
            "--no-show-model-warnings",
            "--restore-chat-history",
        ]
        if ctx.role == "reviewer":
            argv += ["--chat-mode", "ask", "--no-auto-commits"]
        argv += profile.render(["--model={model}"], ctx.values)
        argv += profile.render(profile.extra_args, ctx.values)
        return argv + ["--message-file", ctx.values.get("prompt_file", "")]

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return AiderReader()

    def env(self, profile: AgentProfile, ctx: RunContext) -> dict[str, str]:
        return {"AIDER_CHECK_UPDATE": "false", "AIDER_ANALYTICS": "false"}

    def prepare(self, profile: AgentProfile, ctx: RunContext) -> None:
        exclude = _git_info_exclude(ctx.workspace)
        if exclude is None:
            return
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if ".aider*" not in lines:
            exclude.parent.mkdir(parents=True, exist_ok=True)
            exclude.write_text("\n".join([*lines, ".aider*"]) + "\n")


def _git_info_exclude(path):
    """The worktree's `info/exclude` (shared by all worktrees of the repository)."""
    import subprocess

    done = subprocess.run(
        ["git", "rev-parse", "--git-common-dir"], cwd=path, capture_output=True, text=True
    )
    if done.returncode != 0:
        return None
    from pathlib import Path

    common = Path(done.stdout.strip())
    if not common.is_absolute():
        common = Path(path) / common
    return common / "info" / "exclude"
