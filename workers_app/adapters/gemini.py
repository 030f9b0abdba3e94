"""Gemini CLI (`gemini --output-format stream-json`, checked against 0.61.0), prompt on stdin.

Builder: `--yolo` (every tool call approved, the shell included); reviewer: `--approval-mode
plan`, the CLI's read-only mode: no shell tool, and `write_file`/`replace` are refused outside
its own plans folder. Every run passes `--skip-trust` (and `GEMINI_CLI_TRUST_WORKSPACE=true`):
a new worktree is an untrusted folder, where the CLI exits 55. Resume: `--resume <session id>`,
the UUID of the `init` event; the CLI looks for it among the sessions it saved for the same
working folder, and exits 42 ("Error resuming session: …") when it has none.

The CLI's own home (`GEMINI_CLI_HOME`: settings, saved sessions, plans) is the agent's home
(`ctx.home`), or without one a folder in the worktree's git folder; a resumed run finds its
session there. `prepare` writes `.gemini/settings.json` there: no telemetry, usage statistics or
update checks, the profile's turn limit (`model.maxSessionTurns`), and
`security.auth.selectedType = "gemini-api-key"` when a key is set: without it
`GOOGLE_GEMINI_BASE_URL` (a proxy, a stand-in) makes the CLI pick its "gateway" auth type, which
its own start-up check rejects ("Invalid auth method selected", exit 41). Not
`GEMINI_CLI_SYSTEM_SETTINGS_PATH`: the CLI skips a system settings file below a group- or
world-writable folder such as /tmp.

Events: `init` (session id, model), `message` (the assistant's text in `delta` chunks),
`tool_use`, `tool_result`, `error` (warnings), `result` (status, error, stats). An API error
ends in a `result` with status "error" and the exit code is the HTTP status modulo 256 (401 →
145, 429 → 173); 41 is an auth failure before the start, 53 the turn limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    ERROR,
    MAX_EVENT_TEXT,
    MAX_TOOL_RESULT_TEXT,
    MESSAGE,
    REVIEWER,
    SYSTEM,
    TOOL_CALL,
    TOOL_RESULT,
    USAGE,
    AgentKind,
    Event,
    JsonLinesReader,
    Reader,
    Report,
    RunContext,
    classify_error_text,
    clip,
    dict_at,
    seconds_in,
    summarize_input,
    to_int,
)

if TYPE_CHECKING:
    from ..profiles import AgentProfile

# The CLI's exit codes (packages/core/src/utils/exitCodes.ts and FatalError subclasses).
EXIT_AUTH = 41
EXIT_INPUT = 42
EXIT_TURN_LIMIT = 53
EXIT_UNTRUSTED = 55
EXIT_HTTP_401 = 401 % 256
EXIT_HTTP_429 = 429 % 256

_RETRY_AFTER = re.compile(r"retry (?:after|in) (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)
_QUOTA = re.compile(r"resource has been exhausted|exceeded your current quota", re.IGNORECASE)
_RESUME_REFUSED = re.compile(
    r"Error resuming session|Invalid session identifier|No previous sessions found", re.IGNORECASE
)
# Tool errors that mean "not allowed", not "went wrong".
_DENIED_TYPES = {"policy_violation", "permission_denied", "tool_not_registered"}
_DENIED_TEXT = re.compile(r"^(access denied|tool execution denied)", re.IGNORECASE)


def _retry_after(text: str) -> float | None:
    return seconds_in(_RETRY_AFTER.search(text or ""))


class GeminiReader(JsonLinesReader):
    def __init__(self, *, resuming: bool = False) -> None:
        super().__init__()
        self.resuming = resuming
        self._final: list[str] = []  # the assistant's words since its last tool call
        self._pending: list[str] = []  # delta chunks not yet shown as one transcript message
        self._tool_names: dict[str, str] = {}
        self._in_turn = False
        self._turns = 0

    def on_object(self, obj: dict[str, Any]) -> list[Event]:
        kind = str(obj.get("type", ""))
        if kind == "message":
            return self._message(obj)
        events = self._flush()
        if kind == "init":
            self.report.session_id = str(obj.get("session_id", ""))[:200]
            model = str(obj.get("model", ""))[:100]
            if model and model != "auto":
                self.report.usage.model = model
            events.append(Event(SYSTEM, "session started", {"model": model}))
        elif kind == "tool_use":
            events.append(self._tool_use(obj))
        elif kind == "tool_result":
            events.append(self._tool_result(obj))
        elif kind == "error":
            events.append(Event(ERROR, clip(str(obj.get("message", "")), MAX_EVENT_TEXT)))
        elif kind == "result":
            events.extend(self._result(obj))
        return events

    def _start_turn(self) -> None:
        if not self._in_turn:
            self._in_turn = True
            self._turns += 1

    def _message(self, obj: dict[str, Any]) -> list[Event]:
        if obj.get("role") != "assistant":
            return []  # the CLI echoes the prompt as a user message
        self._start_turn()
        text = str(obj.get("content", ""))
        if obj.get("delta"):
            self._final.append(text)
            self._pending.append(text)
            return []
        self._final, self._pending = [text], []
        return [Event(MESSAGE, clip(text, MAX_EVENT_TEXT))] if text.strip() else []

    def _flush(self) -> list[Event]:
        """The delta chunks so far as one message: the next event ends the message."""
        text, self._pending = "".join(self._pending), []
        return [Event(MESSAGE, clip(text, MAX_EVENT_TEXT))] if text.strip() else []

    def _tool_use(self, obj: dict[str, Any]) -> Event:
        self._start_turn()
        self._final = []
        name, tool_id = str(obj.get("tool_name", "tool")), str(obj.get("tool_id", ""))
        self._tool_names[tool_id] = name
        summary = summarize_input(obj.get("parameters"))
        return Event(TOOL_CALL, summary, {"name": name, "summary": summary, "id": tool_id})

    def _tool_result(self, obj: dict[str, Any]) -> Event:
        self._in_turn = False
        error = dict_at(obj, "error")
        text = str(obj.get("output") or error.get("message") or "")
        is_error = obj.get("status") == "error"
        tool_id = str(obj.get("tool_id", ""))
        if is_error and (
            error.get("type") in _DENIED_TYPES or _DENIED_TEXT.match(str(error.get("message", "")))
        ):
            self.report.permission_denials.append(self._tool_names.get(tool_id, "tool"))
        return Event(
            TOOL_RESULT, clip(text, MAX_TOOL_RESULT_TEXT), {"id": tool_id, "is_error": is_error}
        )

    def _result(self, obj: dict[str, Any]) -> list[Event]:
        report, usage = self.report, self.report.usage
        stats = dict_at(obj, "stats")
        # `input_tokens` counts cached tokens too; `input` is the uncached rest.
        uncached = to_int(stats.get("input"))
        if uncached is None and to_int(stats.get("input_tokens")) is not None:
            uncached = max(0, stats["input_tokens"] - (to_int(stats.get("cached")) or 0))
        usage.add_tokens(
            input=uncached,
            output=to_int(stats.get("output_tokens")),
            cache_read=to_int(stats.get("cached")),
        )
        models = dict_at(stats, "models")
        used = {
            name: to_int(figures.get("total_tokens")) or 0
            for name, figures in models.items()
            if isinstance(figures, dict)
        }
        if used and (not usage.model or usage.model not in used):
            usage.model = max(used, key=lambda name: used[name])[:100]
        usage.turns = self._turns or None
        report.final_text = "".join(self._final)
        if obj.get("status") == "success":
            report.success = True
        else:
            error = dict_at(obj, "error")
            report.success = False
            report.error = str(error.get("message", "")) or "the agent reported an error"
            report.error_type = self._error_type(str(error.get("type", "")), report.error)
            report.retry_after = _retry_after(report.error)
        events = [Event(USAGE, "", usage.as_data())]
        if report.error:
            events.insert(0, Event(ERROR, clip(report.error, MAX_EVENT_TEXT)))
        return events

    @staticmethod
    def _error_type(kind: str, message: str) -> str:
        if kind == "FatalTurnLimitedError":
            return "max_turns"
        if kind == "FatalAuthenticationError":
            return "agent_auth"
        if _QUOTA.search(message):
            return "rate_limited"
        return classify_error_text(message)

    def finish(self, exit_code: int | None, stdout: str, stderr: str) -> Report:
        report = self.report
        if not report.final_text and self._final:
            report.final_text = "".join(self._final)
        if exit_code is None or exit_code == 0:
            return report
        report.success = False
        if self.resuming and exit_code == EXIT_INPUT and _RESUME_REFUSED.search(stderr):
            report.resume_refused = True
        if not report.error_type:
            report.error_type = {
                EXIT_AUTH: "agent_auth",
                EXIT_HTTP_401: "agent_auth",
                EXIT_HTTP_429: "rate_limited",
                EXIT_TURN_LIMIT: "max_turns",
            }.get(exit_code, "")
        if not report.error_type:
            words = stderr + "\n" + report.error
            report.error_type = "rate_limited" if _QUOTA.search(words) else ""
            report.error_type = report.error_type or classify_error_text(words)
        if report.error_type == "rate_limited" and report.retry_after is None:
            report.retry_after = _retry_after(report.error + "\n" + stderr)
        report.error = report.error or stderr.strip()[-4000:]
        return report


def _git_dir(workspace: Path) -> Path | None:
    """The folder git keeps for this work tree (`.git`, or the one a worktree's file names)."""
    dot_git = workspace / ".git"
    if dot_git.is_dir():
        return dot_git
    try:
        first = dot_git.read_text(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("gitdir:"):
        return None
    path = Path(first.removeprefix("gitdir:").strip())
    return path if path.is_absolute() else (workspace / path).resolve()


def cli_home(ctx: RunContext) -> Path:
    """The CLI's own home (`GEMINI_CLI_HOME`): its settings, saved sessions and plans.

    The agent's home when the worker made one (writable in the sandbox, kept between the runs
    of a task); else a folder in the worktree's git folder, out of the tracked tree.
    """
    if ctx.home is not None:
        return Path(ctx.home)
    git_dir = _git_dir(Path(ctx.workspace))
    if git_dir is not None:
        return git_dir / "vibe-gemini"
    digest = hashlib.sha256(str(Path(ctx.workspace).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"vibe-gemini-{digest}"


def settings_path(ctx: RunContext) -> Path:
    return cli_home(ctx) / ".gemini" / "settings.json"


def _auth_type(env: dict[str, str]) -> str:
    """The auth type the CLI would pick from the environment, bar its broken "gateway"."""
    if env.get("GOOGLE_GENAI_USE_GCA") == "true" or env.get("GOOGLE_GENAI_USE_VERTEXAI") == "true":
        return ""
    return "gemini-api-key" if env.get("GEMINI_API_KEY") else ""


class GeminiKind(AgentKind):
    name = "gemini"
    program = "gemini"
    description = "Gemini CLI"
    key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS")
    env_prefixes = ("GEMINI_", "GOOGLE_")
    supports_resume = True

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        if (own := self.profile_argv(profile, ctx)) is not None:
            return own
        argv = [profile.program or self.program, "--skip-trust", "--output-format", "stream-json"]
        argv += ["--approval-mode", "plan"] if ctx.role == REVIEWER else ["--yolo"]
        argv += profile.render(["--model={model}"], ctx.values)
        if ctx.session_id:
            argv += ["--resume", ctx.session_id]
        return argv + profile.render(profile.extra_args, ctx.values)

    def env(self, profile: AgentProfile, ctx: RunContext) -> dict[str, str]:
        return {
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
            "GEMINI_CLI_HOME": str(cli_home(ctx)),
        }

    def settings(self, profile: AgentProfile, ctx: RunContext) -> dict[str, Any]:
        """What the CLI reads from its user settings file for this run."""
        settings: dict[str, Any] = {
            "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
        }
        if profile.max_turns:
            settings["model"] = {"maxSessionTurns": profile.max_turns}
        auth = _auth_type({**os.environ, **profile.env})
        if auth:
            settings["security"] = {"auth": {"selectedType": auth}}
        return settings

    def prepare(self, profile: AgentProfile, ctx: RunContext) -> None:
        path = settings_path(ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.settings(profile, ctx), indent=2) + "\n")

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return GeminiReader(resuming=bool(ctx.session_id))
