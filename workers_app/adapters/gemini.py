"""Gemini CLI (`gemini --output-format stream-json`), prompt on stdin.

Builder: `--yolo`; reviewer: `--approval-mode plan`; every worktree is trusted for the run
(`--skip-trust`), since a fresh worktree is an untrusted folder to the CLI. Events: `init`
(session id, model), `message`, `tool_use`, `tool_result`, `error`, `result` (stats).
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
    to_int,
)

if TYPE_CHECKING:
    from ..profiles import AgentProfile


class GeminiReader(JsonLinesReader):
    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []

    def on_object(self, obj: dict[str, Any]) -> list[Event]:
        kind = str(obj.get("type", ""))
        report = self.report
        if kind == "init":
            report.session_id = str(obj.get("session_id", ""))[:200]
            report.usage.model = str(obj.get("model", ""))[:100]
            return [Event(SYSTEM, "session started", {"model": report.usage.model})]
        if kind == "message":
            if obj.get("role") != "assistant":
                return []
            text = str(obj.get("content", ""))
            if obj.get("delta"):
                self._parts.append(text)
            else:
                self._parts = [text]
            return [Event(MESSAGE, clip(text, MAX_EVENT_TEXT))] if text.strip() else []
        if kind == "tool_use":
            self._parts = []
            return [
                Event(
                    TOOL_CALL,
                    summarize_input(obj.get("parameters")),
                    {"name": str(obj.get("tool_name", "tool")), "id": str(obj.get("tool_id", ""))},
                )
            ]
        if kind == "tool_result":
            text = obj.get("output") or (obj.get("error") or {}).get("message", "")
            return [
                Event(
                    TOOL_RESULT,
                    clip(str(text or ""), MAX_TOOL_RESULT_TEXT),
                    {"id": str(obj.get("tool_id", "")), "is_error": obj.get("status") == "error"},
                )
            ]
        if kind == "error":
            message = str(obj.get("message", ""))
            return [Event(ERROR, clip(message, MAX_EVENT_TEXT))]
        if kind == "result":
            stats = obj.get("stats") if isinstance(obj.get("stats"), dict) else {}
            report.usage.add_tokens(
                input=to_int(stats.get("input_tokens")),
                output=to_int(stats.get("output_tokens")),
                cache_read=to_int(stats.get("cached")),
            )
            report.usage.turns = to_int(stats.get("tool_calls"))
            report.final_text = "".join(self._parts)
            if obj.get("status") == "success":
                report.success = True
            else:
                error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
                report.success = False
                report.error = str(error.get("message", "")) or "the agent reported an error"
                report.error_type = classify_error_text(report.error)
            return [Event(USAGE, "", report.usage.as_data())]
        return []

    def finish(self, exit_code, stdout, stderr):
        report = self.report
        if not report.final_text and self._parts:
            report.final_text = "".join(self._parts)
        if exit_code not in (0, None) and not report.error_type:
            report.error_type = classify_error_text(stderr + "\n" + report.error)
            report.error = report.error or stderr.strip()[-4000:]
        return report


class GeminiKind(AgentKind):
    name = "gemini"
    program = "gemini"
    description = "Gemini CLI"
    key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS")
    env_prefixes = ("GEMINI_", "GOOGLE_")
    supports_resume = True

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        custom = profile.reviewer if ctx.role == "reviewer" else profile.builder
        if ctx.session_id and profile.resume:
            custom = profile.resume
        if custom:
            return profile.render(custom, ctx.values)
        argv = [profile.program or self.program, "--skip-trust", "--output-format", "stream-json"]
        argv += ["--approval-mode", "plan"] if ctx.role == "reviewer" else ["--yolo"]
        argv += profile.render(["--model={model}"], ctx.values)
        if ctx.session_id:
            argv += ["--resume", ctx.session_id]
        return argv + profile.render(profile.extra_args, ctx.values)

    def env(self, profile: AgentProfile, ctx: RunContext) -> dict[str, str]:
        return {"GEMINI_CLI_TRUST_WORKSPACE": "true"}

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return GeminiReader()
