"""OpenAI Codex CLI (`codex exec --json`).

Builder: `--sandbox workspace-write` (in the factory's sandbox: `danger-full-access`); Codex's
own sandbox keeps the git folder read-only, so the worker commits what it left. Reviewer:
`--sandbox read-only`. Resume: `codex exec resume <thread_id>`. Events: `thread.started`
(the session id), `item.completed` (messages, commands, file changes), `turn.completed`
(usage), `turn.failed` and `error`.
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
    to_int,
)

if TYPE_CHECKING:
    from ..profiles import AgentProfile


class CodexReader(JsonLinesReader):
    def on_object(self, obj: dict[str, Any]) -> list[Event]:
        kind = str(obj.get("type", ""))
        report = self.report
        if kind == "thread.started":
            report.session_id = str(obj.get("thread_id", ""))[:200]
            return [Event(SYSTEM, "session started", {"session_id": report.session_id})]
        if kind in ("item.started", "item.completed"):
            return self._item(kind, obj.get("item") or {})
        if kind == "turn.completed":
            usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
            report.usage.add_tokens(
                input=to_int(usage.get("input_tokens")),
                output=to_int(usage.get("output_tokens")),
                cache_read=to_int(usage.get("cached_input_tokens")),
            )
            report.usage.turns = (report.usage.turns or 0) + 1
            report.success = True
            return [Event(USAGE, "", report.usage.as_data())]
        if kind in ("turn.failed", "error"):
            error = obj.get("error")
            message = str(error.get("message", "")) if isinstance(error, dict) else ""
            message = message or str(obj.get("message", "")) or kind
            report.success = False
            report.error = message
            report.error_type = classify_error_text(message) or report.error_type
            return [Event(ERROR, clip(message, MAX_EVENT_TEXT))]
        return []

    def _item(self, phase: str, item: dict[str, Any]) -> list[Event]:
        kind = item.get("type") or item.get("item_type")
        if kind in ("agent_message", "assistant_message") and phase == "item.completed":
            text = str(item.get("text", ""))
            self.report.final_text = text
            return [Event(MESSAGE, clip(text, MAX_EVENT_TEXT))] if text.strip() else []
        if kind == "command_execution":
            if phase == "item.started":
                return [
                    Event(
                        TOOL_CALL,
                        clip(str(item.get("command", "")), 200),
                        {"name": "shell", "id": str(item.get("id", ""))},
                    )
                ]
            return [
                Event(
                    TOOL_RESULT,
                    clip(str(item.get("aggregated_output", "")), MAX_TOOL_RESULT_TEXT),
                    {
                        "id": str(item.get("id", "")),
                        "is_error": item.get("exit_code") not in (0, None),
                    },
                )
            ]
        if kind == "file_change" and phase == "item.completed":
            paths = [
                str(c.get("path", "")) for c in item.get("changes") or [] if isinstance(c, dict)
            ]
            return [
                Event(
                    TOOL_CALL,
                    ", ".join(paths)[:200],
                    {"name": "file_change", "id": str(item.get("id", ""))},
                )
            ]
        return []

    def finish(self, exit_code, stdout, stderr):
        report = self.report
        if exit_code not in (0, None) and not report.error_type:
            report.error_type = classify_error_text(stderr)
            report.error = report.error or stderr.strip()[-4000:]
        return report


class CodexKind(AgentKind):
    name = "codex"
    program = "codex"
    description = "OpenAI Codex CLI"
    key_env = ("OPENAI_API_KEY", "CODEX_API_KEY")
    env_prefixes = ("OPENAI_", "CODEX_")
    supports_resume = True

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        custom = profile.reviewer if ctx.role == "reviewer" else profile.builder
        if ctx.session_id and profile.resume:
            custom = profile.resume
        if custom:
            return profile.render(custom, ctx.values)
        if ctx.role == "reviewer":
            sandbox = "read-only"
        else:
            sandbox = "danger-full-access" if ctx.sandboxed else "workspace-write"
        program = profile.program or self.program
        head = [program, "exec"]
        if ctx.session_id:
            head += ["resume"]
        options = ["--json", "--skip-git-repo-check", "--sandbox", sandbox]
        options += profile.render(["--model={model}"], ctx.values)
        options += profile.render(profile.extra_args, ctx.values)
        tail = [ctx.session_id, "-"] if ctx.session_id else ["-"]
        return head + options + tail

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return CodexReader()
