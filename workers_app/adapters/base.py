"""What every agent kind shares: the run's context, the events it prints, what it reports.

An adapter (one per agent kind: Claude Code, Codex, Gemini, Aider, any command, the simulated
agent) knows three things about its CLI:

- the command line of a **builder** run, a **reviewer** run (read-only by construction) and a
  **resume** of an earlier session (`argv`);
- how to read its output, line by line, into transcript `Event`s and, at the end, a `Report`
  of what the agent itself said: its final message, whether it succeeded, why not (an auth
  error, a rate limit, denied permissions, out of turns or budget), its session id and usage
  (`reader`);
- what its working directory and environment need before it starts (`prepare`, `env`).

The worker decides the outcome from the report, never from the exit code alone
(`workers_app.outcomes`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..profiles import AgentProfile

BUILDER = "builder"
REVIEWER = "reviewer"
ROLES = (BUILDER, REVIEWER)

# Event kinds, as the transcript shows them.
MESSAGE = "message"  # the agent's own words
TOOL_CALL = "tool_call"  # data: {"name", "summary", "id"}
TOOL_RESULT = "tool_result"  # data: {"id", "is_error"}; text truncated
ERROR = "error"
USAGE = "usage"  # data: the Usage figures
OUTPUT = "output"  # a plain-text agent's stdout line
STDERR = "stderr"
SYSTEM = "system"  # the agent's own start-up or session notes; the worker's notes
EVENT_KINDS = (MESSAGE, TOOL_CALL, TOOL_RESULT, ERROR, USAGE, OUTPUT, STDERR, SYSTEM)

MAX_EVENT_TEXT = 8_000
MAX_TOOL_RESULT_TEXT = 2_000
MAX_SUMMARY = 200


def clip(text: str, limit: int) -> str:
    """Keep `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit} more characters not kept …]"


def summarize_input(value: Any) -> str:
    """A one-line summary of a tool call's input, for the transcript's collapsed row."""
    if isinstance(value, dict):
        for key in ("command", "cmd", "file_path", "path", "pattern", "url", "query", "prompt"):
            if isinstance(value.get(key), str | list):
                shown = value[key]
                shown = " ".join(shown) if isinstance(shown, list) else shown
                return clip(shown.replace("\n", " "), MAX_SUMMARY)
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return clip(str(value).replace("\n", " "), MAX_SUMMARY)


@dataclass
class Event:
    kind: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    model: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost_usd: Decimal | None = None
    turns: int | None = None

    def add_tokens(
        self,
        *,
        input: int | None = None,
        output: int | None = None,
        cache_read: int | None = None,
        cache_write: int | None = None,
    ) -> None:
        """Sum per-turn figures (agents that report usage turn by turn)."""
        for name, value in (
            ("input_tokens", input),
            ("output_tokens", output),
            ("cache_read_tokens", cache_read),
            ("cache_write_tokens", cache_write),
        ):
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(self, name, (getattr(self, name) or 0) + value)

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {k: v for k, v in self.__dict__.items() if v not in (None, "")}
        if self.cost_usd is not None:
            data["cost_usd"] = f"{self.cost_usd:f}"
        return data


def to_decimal(value: Any) -> Decimal | None:
    """A cost figure as the agent printed it (number or string), or None if it is not one."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or number < 0:
        return None
    # Agents print floats (0.0029040000000000003); money is kept to the millionth of a dollar.
    if number >= 10**12:
        return None
    return number.quantize(Decimal("0.000001")).normalize()


def dict_at(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """`obj[key]` if the agent printed an object there; a missing or odd field reads as empty."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def list_at(obj: dict[str, Any], key: str) -> list[Any]:
    """`obj[key]` if the agent printed a list there; a missing or odd field reads as empty."""
    value = obj.get(key)
    return value if isinstance(value, list) else []


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    return None


@dataclass
class Report:
    """What the agent said about its run. `success` None: it did not say (plain-text agents)."""

    final_text: str = ""
    success: bool | None = None
    error_type: str = ""  # agent_auth, rate_limited, permission_denied, max_turns, budget_exceeded
    error: str = ""
    retry_after: float | None = None
    session_id: str = ""
    usage: Usage = field(default_factory=Usage)
    permission_denials: list[str] = field(default_factory=list)
    resume_refused: bool = False  # asked to resume, the agent could not find the session


class Reader:
    """Reads one run's output. The runner calls `feed`/`feed_stderr` from its reader threads
    (one thread per stream, so each method sees its stream in order) and `finish` once."""

    def __init__(self) -> None:
        self.report = Report()

    def feed(self, line: str) -> list[Event]:
        return [Event(OUTPUT, line)] if line.strip() else []

    def feed_stderr(self, line: str) -> list[Event]:
        return [Event(STDERR, line)] if line.strip() else []

    def finish(self, exit_code: int | None, stdout: str, stderr: str) -> Report:
        """The report, once the agent exited; `stdout`/`stderr` are the kept tails."""
        return self.report


class TextReader(Reader):
    """A plain-text agent: every line is transcript; its final message is its whole stdout."""

    def finish(self, exit_code: int | None, stdout: str, stderr: str) -> Report:
        self.report.final_text = stdout
        return self.report


class JsonLinesReader(Reader):
    """An agent that prints one JSON object per line; `on_object` is the kind's own reading.

    A line that is not JSON (a warning the CLI printed) is kept as plain output.
    """

    def feed(self, line: str) -> list[Event]:
        stripped = line.strip()
        if not stripped:
            return []
        try:
            obj = json.loads(stripped)
        except ValueError:
            return [Event(OUTPUT, clip(line, MAX_EVENT_TEXT))]
        if not isinstance(obj, dict):
            return [Event(OUTPUT, clip(line, MAX_EVENT_TEXT))]
        return self.on_object(obj)

    def on_object(self, obj: dict[str, Any]) -> list[Event]:
        raise NotImplementedError


@dataclass(frozen=True)
class RunContext:
    """One run about to start. `session_id` set: resume that session with `prompt` only."""

    role: str
    workspace: Path
    values: dict[str, str]
    session_id: str = ""
    sandboxed: bool = False
    as_root: bool = False
    budget_usd: Decimal | None = None
    # The agent's own home folder (its HOME) when the worker made one: where a CLI keeps its
    # settings and sessions (`prepare` may write there).
    home: Path | None = None


AUTH_PATTERNS = re.compile(
    r"(401\b|unauthori[sz]ed|invalid[ _-]?(x-)?api[ _-]?key|authentication[ _-]?(error|failed)|"
    r"not able to authenticate|incorrect api key|api key not valid|invalid_api_key|"
    r"permission_denied.*api key|please run /login|credit balance is too low)",
    re.IGNORECASE,
)
RATE_PATTERNS = re.compile(
    r"(429\b|rate[ _-]?limit|too many requests|resource[ _-]?exhausted|overloaded)",
    re.IGNORECASE,
)


_DURATION_UNITS = {"ms": 0.001, "m": 60.0, "min": 60.0}


def seconds_in(match: re.Match[str] | None) -> float | None:
    """A provider's "retry after N unit" as seconds: group 1 the number, group 2 the unit."""
    if match is None:
        return None
    unit = (match.group(2) or "s").lower() if match.re.groups >= 2 else "s"
    return float(match.group(1)) * _DURATION_UNITS.get(unit, 1.0)


def classify_error_text(text: str) -> str:
    """An agent's error message as a failure type: agent_auth, rate_limited, or ""."""
    if AUTH_PATTERNS.search(text or ""):
        return "agent_auth"
    if RATE_PATTERNS.search(text or ""):
        return "rate_limited"
    return ""


class AgentKind:
    """The default behaviour of a kind; each adapter overrides what its CLI needs."""

    name = ""
    program = ""
    description = ""
    # Preflight: at least one of these must be set in the worker's environment (or the
    # profile's env) for a kind that talks to a provider; empty for kinds that need no key.
    key_env: tuple[str, ...] = ()
    # Provider variables passed through to the agent (besides the worker-wide allowlist).
    env_prefixes: tuple[str, ...] = ()
    supports_resume = False
    supports_budget = False  # the CLI itself caps a run's cost
    # The CLI reports the whole session's usage, so a resumed run's figures include the runs
    # before it (Codex); the worker subtracts what those runs recorded.
    usage_is_session_total = False

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        """The command line; a profile's own `builder`/`reviewer`/`resume` argv wins."""
        raise NotImplementedError

    @staticmethod
    def profile_argv(profile: AgentProfile, ctx: RunContext) -> list[str] | None:
        """The profile's own command line for this run (resume, else its role's), if it has one."""
        template = profile.reviewer if ctx.role == REVIEWER else profile.builder
        if ctx.session_id and profile.resume:
            template = profile.resume
        return profile.render(template, ctx.values) if template else None

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return TextReader()

    def env(self, profile: AgentProfile, ctx: RunContext) -> dict[str, str]:
        return {}

    def prepare(self, profile: AgentProfile, ctx: RunContext) -> None:
        """Make the working directory ready for this CLI (trust files, git excludes)."""

    def version_argv(self, profile: AgentProfile) -> list[str]:
        return [profile.program or self.program, "--version"]
