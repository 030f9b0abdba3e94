"""Claude Code (`claude -p`), driven headless with stream-json output.

Builder: `--permission-mode acceptEdits` with git add/commit and the project's test command
allowed (in the sandbox: `bypassPermissions`, with IS_SANDBOX=1 when running as root).
Reviewer: read-only tools only, Edit/Write denied. Resume: `--resume <session_id>`.
The final `result` event carries the verdict text, success, denials, cost, usage and session.
"""

from __future__ import annotations

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
    RunContext,
    classify_error_text,
    clip,
    summarize_input,
    to_decimal,
    to_int,
)

if TYPE_CHECKING:
    from ..profiles import AgentProfile

READ_ONLY_TOOLS = ("Read", "Grep", "Glob", "LS")
WRITE_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")


class ClaudeReader(JsonLinesReader):
    """stream-json: `system` (init), `assistant`/`user` messages, a final `result`."""

    def on_object(self, obj: dict[str, Any]) -> list[Event]:
        kind = obj.get("type")
        report = self.report
        if isinstance(obj.get("session_id"), str) and obj["session_id"]:
            report.session_id = obj["session_id"][:200]
        if kind == "system":
            if isinstance(obj.get("model"), str):
                report.usage.model = obj["model"][:100]
            return [Event(SYSTEM, f"{obj.get('subtype', 'system')}", {"model": report.usage.model})]
        if kind in ("assistant", "user"):
            return self._message(obj.get("message") or {})
        if kind == "result":
            return self._result(obj)
        return []

    def _message(self, message: dict[str, Any]) -> list[Event]:
        events = []
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and str(block.get("text", "")).strip():
                events.append(Event(MESSAGE, clip(str(block["text"]), MAX_EVENT_TEXT)))
            elif block.get("type") == "tool_use":
                name = str(block.get("name", "tool"))
                events.append(
                    Event(
                        TOOL_CALL,
                        summarize_input(block.get("input")),
                        {"name": name, "id": str(block.get("id", ""))},
                    )
                )
            elif block.get("type") == "tool_result":
                text = block.get("content")
                if isinstance(text, list):
                    text = "\n".join(
                        str(part.get("text", "")) for part in text if isinstance(part, dict)
                    )
                events.append(
                    Event(
                        TOOL_RESULT,
                        clip(str(text or ""), MAX_TOOL_RESULT_TEXT),
                        {
                            "id": str(block.get("tool_use_id", "")),
                            "is_error": bool(block.get("is_error")),
                        },
                    )
                )
        return events

    def _result(self, obj: dict[str, Any]) -> list[Event]:
        report = self.report
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        report.usage.add_tokens(
            input=to_int(usage.get("input_tokens")),
            output=to_int(usage.get("output_tokens")),
            cache_read=to_int(usage.get("cache_read_input_tokens")),
            cache_write=to_int(usage.get("cache_creation_input_tokens")),
        )
        report.usage.cost_usd = to_decimal(obj.get("total_cost_usd"))
        report.usage.turns = to_int(obj.get("num_turns"))
        model_usage = obj.get("modelUsage")
        if isinstance(model_usage, dict) and model_usage and not report.usage.model:
            report.usage.model = str(next(iter(model_usage)))[:100]
        text = obj.get("result")
        report.final_text = text if isinstance(text, str) else ""
        subtype = str(obj.get("subtype", ""))
        is_error = bool(obj.get("is_error")) or subtype != "success"
        report.success = not is_error
        denials = obj.get("permission_denials")
        if isinstance(denials, list):
            report.permission_denials = [
                str(d.get("tool_name", "?")) if isinstance(d, dict) else str(d) for d in denials
            ]
        events = [Event(USAGE, "", report.usage.as_data())]
        if is_error:
            message = report.final_text or "; ".join(str(e) for e in obj.get("errors") or [])
            report.error = message or subtype
            if subtype == "error_max_turns":
                report.error_type = "max_turns"
            elif subtype == "error_max_budget_usd":
                report.error_type = "budget_exceeded"
            else:
                report.error_type = classify_error_text(message)
            events.append(Event(ERROR, clip(report.error, MAX_EVENT_TEXT), {"subtype": subtype}))
        return events

    def finish(self, exit_code, stdout, stderr):
        report = self.report
        if report.success is None and not report.error_type:
            report.error_type = classify_error_text(stderr)
            report.error = stderr.strip()[-4000:]
        if "No conversation found" in stderr or "No conversation found" in report.error:
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
        custom = profile.reviewer if ctx.role == "reviewer" else profile.builder
        if custom:
            return profile.render(custom, ctx.values)
        argv = [
            profile.program or self.program,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
        ]
        test = ctx.values.get("test_command", "")
        if ctx.role == "reviewer":
            allowed = [*READ_ONLY_TOOLS, "Bash(git diff:*)", "Bash(git log:*)", "Bash(git show:*)"]
            if test:
                allowed.append(f"Bash({test}:*)")
            argv += ["--allowedTools", *allowed, "--disallowedTools", *WRITE_TOOLS]
        elif ctx.sandboxed:
            argv += ["--permission-mode", "bypassPermissions"]
        else:
            allowed = ["Bash(git add:*)", "Bash(git commit:*)", "Bash(git status:*)"]
            if test:
                allowed.append(f"Bash({test}:*)")
            argv += ["--permission-mode", "acceptEdits", "--allowedTools", *allowed]
        argv += profile.render(
            ["--max-turns={max_turns}", "--model={model}", "--max-budget-usd={budget_usd}"],
            ctx.values,
        )
        if ctx.session_id:
            argv += ["--resume", ctx.session_id]
        return argv + profile.render(profile.extra_args, ctx.values)

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return ClaudeReader()

    def env(self, profile: AgentProfile, ctx: RunContext) -> dict[str, str]:
        env = {"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        if ctx.sandboxed and ctx.as_root and ctx.role != "reviewer":
            env["IS_SANDBOX"] = "1"  # bypassPermissions refuses root outside a sandbox
        return env
