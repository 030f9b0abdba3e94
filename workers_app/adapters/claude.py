"""Claude Code (`claude -p`), driven headless with stream-json output.

Checked against Claude Code 2.1.332 and a stand-in Messages API (tests/standins/anthropic_api.py).

Builder: `--permission-mode acceptEdits`, nothing may prompt (`--permission-prompts none`: what
would ask is denied), and only `git add`, `git commit` and the project's test command are allowed
in Bash (read-only commands such as `git status` or `cat` are allowed by Claude Code itself). In
the sandbox: `bypassPermissions`, which Claude Code refuses as root unless IS_SANDBOX=1.

Reviewer: read-only by construction, sandbox or not. Edit, Write and NotebookEdit are removed
from the session (`--disallowedTools`: the model is told "No such tool available"), nothing may
prompt, so a Bash command that writes (`touch`, `git commit`, `git diff --output=…`) is denied;
no `Bash(git diff:*)`-style allow rules, because a prefix rule also allows `--output=FILE`. The
reviewer loads no settings files (`--setting-sources ""`): the worktree's `.claude/settings.json`
could otherwise run hooks, and the task's home folder is shared with a sandboxed builder.

Resume: `--resume <session_id>`; an unknown id ends at once with "No conversation found".
The final `result` event carries the final text, success, denials, cost, usage and session; an
API failure is a `result` with `is_error` and `api_error_status` (its subtype says "success").
Claude Code retries failed API calls itself (10 times by default, honouring Retry-After, each
retry an `api_retry` system event); CLAUDE_CODE_MAX_RETRIES in a profile's env changes that.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from .base import (
    ERROR,
    MAX_EVENT_TEXT,
    MAX_TOOL_RESULT_TEXT,
    MESSAGE,
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
    list_at,
    summarize_input,
    to_decimal,
    to_int,
)

if TYPE_CHECKING:
    from ..profiles import AgentProfile

READ_ONLY_TOOLS = ("Read", "Grep", "Glob")
WRITE_TOOLS = ("Edit", "Write", "NotebookEdit")
REVIEWER_DENIED_BASH = ("Bash(git commit:*)", "Bash(git push:*)")
BUILDER_BASH = ("Bash(git add:*)", "Bash(git commit:*)")

SYNTHETIC_MODEL = "<synthetic>"  # the model name on messages Claude Code makes up itself
RESUME_REFUSED = re.compile(
    r"No conversation found with session ID|does not match any session title", re.IGNORECASE
)
BUDGET_REFUSED = re.compile(r"--max-budget-usd must be a number greater than 0")
AUTH_API_ERRORS = ("authentication_error", "permission_error", "billing_error")
RATE_API_ERRORS = ("rate_limit_error", "overloaded_error")


def _api_error_type(status: Any, api_type: Any, message: str) -> str:
    """An API failure Claude Code reported, as one of our error types (or "")."""
    if status in (401, 403) or api_type in AUTH_API_ERRORS:
        return "agent_auth"
    if status in (429, 529) or api_type in RATE_API_ERRORS:
        return "rate_limited"
    return classify_error_text(message)


def _tool_result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) if part.get("type", "text") == "text" else f"[{part['type']}]"
            for part in content
            if isinstance(part, dict)
        )
    return "" if content is None else str(content)


class ClaudeReader(JsonLinesReader):
    """stream-json: `system` events (init, api_retry, permission_denied, hooks…), `assistant`
    and `user` messages, one final `result`."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[str, str] = {}  # tool_use id → "Name: summary", for denials
        self._denied: dict[str, str] = {}  # tool_use id → "Name: summary"
        self._retry_delay: float | None = None  # the CLI's last wait after a 429/529
        self._api_error = ""  # the text of Claude Code's own API-error message
        self._result_seen = False

    def on_object(self, obj: dict[str, Any]) -> list[Event]:
        kind = obj.get("type")
        if isinstance(obj.get("session_id"), str) and obj["session_id"]:
            self.report.session_id = obj["session_id"][:200]
        if kind == "system":
            return self._system(obj)
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "user":
            return self._tool_results(obj.get("message") or {})
        if kind == "result":
            return self._result(obj)
        return []  # stream_event (partial messages), rate_limit_event, …: nothing to keep

    def _system(self, obj: dict[str, Any]) -> list[Event]:
        subtype = str(obj.get("subtype") or "system")
        if subtype == "init":
            model = obj.get("model")
            if isinstance(model, str) and model and model != SYNTHETIC_MODEL:
                self.report.usage.model = model[:100]
            data = {
                "model": self.report.usage.model,
                "permission_mode": str(obj.get("permissionMode", "")),
                "version": str(obj.get("claude_code_version", "")),
            }
            return [Event(SYSTEM, f"init: {data['model']} ({data['permission_mode']})", data)]
        if subtype == "api_retry":
            status = obj.get("error_status")
            delay = to_int(obj.get("retry_delay_ms"))
            if status in (429, 529) and delay is not None:
                self._retry_delay = delay / 1000
            text = (
                f"API error {status} ({obj.get('error', '')}); retry {obj.get('attempt')}"
                f" of {obj.get('max_retries')} in {(delay or 0) / 1000:g}s"
            )
            return [Event(SYSTEM, text, {"subtype": subtype, "status": status})]
        if subtype == "permission_denied":
            tool_id = str(obj.get("tool_use_id", ""))
            what = self._calls.get(tool_id) or str(obj.get("tool_name", "?"))
            self._denied[tool_id] = what
            reason = str(obj.get("message") or obj.get("decision_reason") or "")
            text = clip(f"permission denied: {what} — {reason}", MAX_EVENT_TEXT)
            return [Event(SYSTEM, text, {"subtype": subtype, "id": tool_id})]
        return [Event(SYSTEM, subtype, {"subtype": subtype})]

    def _assistant(self, obj: dict[str, Any]) -> list[Event]:
        message = obj.get("message") or {}
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        if obj.get("is_api_error_message") or message.get("model") == SYNTHETIC_MODEL:
            # Claude Code's own words about a failed API call, not the model's.
            text = "\n".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
            self._api_error = text.strip()
            data = {"status": obj.get("api_error_status"), "error": str(obj.get("error", ""))}
            return [Event(ERROR, clip(text, MAX_EVENT_TEXT), data)] if text.strip() else []
        events = []
        for block in blocks:
            if block.get("type") == "text" and str(block.get("text", "")).strip():
                events.append(Event(MESSAGE, clip(str(block["text"]), MAX_EVENT_TEXT)))
            elif block.get("type") == "tool_use":
                name = str(block.get("name", "tool"))
                tool_id = str(block.get("id", ""))
                summary = summarize_input(block.get("input"))
                self._calls[tool_id] = f"{name}: {summary}"
                events.append(Event(TOOL_CALL, summary, {"name": name, "id": tool_id}))
        return events

    def _tool_results(self, message: dict[str, Any]) -> list[Event]:
        # A user message in the stream carries tool results; its text is not the agent's.
        content = message.get("content")
        events = []
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = _tool_result_text(block.get("content"))
                data = {
                    "id": str(block.get("tool_use_id", "")),
                    "is_error": bool(block.get("is_error")),
                }
                events.append(Event(TOOL_RESULT, clip(text, MAX_TOOL_RESULT_TEXT), data))
        return events

    def _result(self, obj: dict[str, Any]) -> list[Event]:
        self._result_seen = True
        report = self.report
        usage = dict_at(obj, "usage")
        report.usage.add_tokens(
            input=to_int(usage.get("input_tokens")),
            output=to_int(usage.get("output_tokens")),
            cache_read=to_int(usage.get("cache_read_input_tokens")),
            cache_write=to_int(usage.get("cache_creation_input_tokens")),
        )
        cost = to_decimal(obj.get("total_cost_usd"))
        if cost is not None:
            report.usage.cost_usd = cost
        report.usage.turns = to_int(obj.get("num_turns"))
        model_usage = obj.get("modelUsage")
        if isinstance(model_usage, dict) and model_usage and not report.usage.model:
            report.usage.model = str(next(iter(model_usage)))[:100]
        denials = obj.get("permission_denials")
        for denial in denials if isinstance(denials, list) else []:
            if isinstance(denial, dict):
                tool_id = str(denial.get("tool_use_id", ""))
                name = str(denial.get("tool_name", "?"))
                self._denied.setdefault(
                    tool_id, f"{name}: {summarize_input(denial.get('tool_input'))}"
                )
        report.permission_denials = list(self._denied.values())

        subtype = str(obj.get("subtype", ""))
        result = obj.get("result")
        text = result if isinstance(result, str) else ""
        # No subtype: a team's own wrapper (the `command` kind's stream-json) that only says
        # is_error; Claude Code itself always sends one ("success", "error_max_turns", …).
        is_error = bool(obj.get("is_error")) or subtype not in ("", "success")
        report.success = not is_error
        events = [Event(USAGE, "", report.usage.as_data())]
        if not is_error:
            report.final_text = text
            return events
        errors = list_at(obj, "errors")
        message = text or "; ".join(str(e) for e in errors) or self._api_error or subtype
        report.error = message
        if subtype == "error_max_turns":
            report.error_type = "max_turns"
        elif subtype == "error_max_budget_usd":
            report.error_type = "budget_exceeded"
        else:
            report.error_type = _api_error_type(
                obj.get("api_error_status"), obj.get("api_error_type"), message
            )
        if report.error_type == "rate_limited":
            report.retry_after = self._retry_delay
        if RESUME_REFUSED.search(message):
            report.resume_refused = True
        data = {"subtype": subtype, "status": obj.get("api_error_status")}
        events.append(Event(ERROR, clip(message, MAX_EVENT_TEXT), data))
        return events

    def finish(self, exit_code: int | None, stdout: str, stderr: str) -> Report:
        report = self.report
        if not self._result_seen:
            # It stopped before its result: a bad argument, root without IS_SANDBOX, a crash.
            words = stderr.strip() or self._api_error or stdout.strip()
            report.error = words[-4000:]
            report.success = False if exit_code != 0 else None
            if BUDGET_REFUSED.search(words):
                report.error_type = "budget_exceeded"
            else:
                report.error_type = classify_error_text(words)
        if RESUME_REFUSED.search(stderr) or RESUME_REFUSED.search(report.error):
            report.resume_refused = True
        return report


class ClaudeKind(AgentKind):
    name = "claude"
    program = "claude"
    description = "Claude Code"
    key_env = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
    env_prefixes = ("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_CONFIG_DIR")
    supports_resume = True
    supports_budget = True

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        if (own := self.profile_argv(profile, ctx)) is not None:
            return own
        argv = [profile.program or self.program, "-p", "--output-format", "stream-json"]
        argv.append("--verbose")  # stream-json with -p needs it
        test = ctx.values.get("test_command", "")
        test_rule = [f"Bash({test}:*)"] if test else []
        if ctx.role == "reviewer":
            argv += ["--setting-sources", "", "--permission-mode", "default"]
            argv += ["--permission-prompts", "none"]
            argv += ["--allowedTools", *READ_ONLY_TOOLS, *test_rule]
            argv += ["--disallowedTools", *WRITE_TOOLS, *REVIEWER_DENIED_BASH]
        elif ctx.sandboxed:
            argv += ["--permission-mode", "bypassPermissions"]
        else:
            argv += ["--permission-mode", "acceptEdits", "--permission-prompts", "none"]
            argv += ["--allowedTools", *BUILDER_BASH, *test_rule]
        values = dict(ctx.values)
        if not values.get("budget_usd") and ctx.budget_usd is not None:
            values["budget_usd"] = f"{ctx.budget_usd:.2f}"
        argv += profile.render(
            ["--max-turns={max_turns}", "--model={model}", "--max-budget-usd={budget_usd}"],
            values,
        )
        if ctx.session_id:
            argv += ["--resume", ctx.session_id]
        return argv + profile.render(profile.extra_args, ctx.values)

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return ClaudeReader()

    def env(self, profile: AgentProfile, ctx: RunContext) -> dict[str, str]:
        env = {"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        env["DISABLE_TELEMETRY"] = "1"
        env["DISABLE_ERROR_REPORTING"] = "1"
        # The CLI retries a failed call ten times by default, a refused key too (25 s and
        # more); the worker retries whole runs with its own backoff, so a few are enough.
        env["CLAUDE_CODE_MAX_RETRIES"] = os.environ.get("CLAUDE_CODE_MAX_RETRIES", "2")
        if ctx.sandboxed and ctx.as_root and ctx.role != "reviewer":
            env["IS_SANDBOX"] = "1"  # bypassPermissions refuses root outside a sandbox
        return env
