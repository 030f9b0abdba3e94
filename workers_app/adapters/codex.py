"""OpenAI Codex CLI (`codex exec --json`), checked against codex-cli 0.171.0.

Builder: Codex's own sandbox in `workspace-write` (in the factory's sandbox:
`danger-full-access`, no sandbox in a sandbox); it keeps the git folder read-only, so the worker
commits what the agent left. Reviewer: `read-only`, so a shell command that writes fails with
"Read-only file system". Resume: `codex exec resume [OPTIONS] <thread_id> -`; `resume` has no
`--sandbox` flag, so there the sandbox is `-c sandbox_mode=…`, placed after the profile's own
options (the last `-c` of a key wins); a fresh run uses `--sandbox`, which beats any `-c`.

Output (`--json`, one object a line): `thread.started` (the session id), `turn.started`,
`item.started`/`item.completed` (`agent_message`, `command_execution`, `file_change`,
`mcp_tool_call`, `web_search`, `todo_list`, `reasoning`, and `error` items, which are warnings,
not failures), `turn.completed` (token usage: the whole session's running total, so a resumed
run reports the earlier runs' tokens too) and `turn.failed`/`error` (the provider's error as
text: "unexpected status 401 Unauthorized: …", "exceeded retry limit, last status: 429 …").
Codex reports no cost and has no turn or budget limit. Commands its sandbox refused are not
printed at all; the model sees the failure, the transcript does not.

Sessions live in `$CODEX_HOME` (default `~/.codex`): a resume needs the same home as the first
run. That home must not lie inside the temporary folder (`$TMPDIR`, else /tmp): Codex then will
not make its `codex-linux-sandbox` helper, and every sandboxed command fails with "bwrap: execvp
codex-linux-sandbox: No such file or directory" while the run still ends with status 0.
No trust is saved for the worktree (`prepare` does nothing): a trusted project's own
`.codex/config.toml` would be loaded, and the repository under work should not configure it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import (
    ERROR,
    MAX_EVENT_TEXT,
    MAX_SUMMARY,
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

# Codex words some provider errors its own way; these need a person, like a bad key.
ACCOUNT_PATTERNS = re.compile(r"(quota exceeded|insufficient_quota|usage limit)", re.IGNORECASE)
RETRY_AFTER = re.compile(
    r"(?:try again in|retry after|retry-after:?)\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds?)?\b",
    re.IGNORECASE,
)
RESUME_MISSING = ("no rollout found", "thread/resume failed")
STARTED, COMPLETED = "item.started", "item.completed"
SHELL_WRAPPERS = ("/bin/bash", "/bin/sh", "/bin/zsh", "bash", "sh", "zsh")


def _classify(message: str) -> str:
    if ACCOUNT_PATTERNS.search(message):
        return "agent_auth"
    return classify_error_text(message)


def _retry_after(text: str) -> float | None:
    return seconds_in(RETRY_AFTER.search(text or ""))


def _shown_command(command: str) -> str:
    """`/bin/bash -lc "cat hello.txt"` as `cat hello.txt`: Codex wraps every command so."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if len(words) == 3 and words[0] in SHELL_WRAPPERS and words[1] in ("-lc", "-c"):
        return words[2]
    return command


def _model_of(profile: AgentProfile) -> str:
    """The profile's model, or the last `-c model=…` of its extra_args (Codex never says)."""
    if profile.model:
        return profile.model[:100]
    model = ""
    for item in profile.extra_args:
        key, sep, value = item.partition("=")
        if sep and key.strip() == "model":
            model = value.strip().strip("\"'")
    return model[:100]


class CodexReader(JsonLinesReader):
    def __init__(self, *, model: str = "", resume_id: str = "") -> None:
        super().__init__()
        self.report.usage.model = model
        self.resume_id = resume_id
        self.failed = False

    def on_object(self, obj: dict[str, Any]) -> list[Event]:
        kind = str(obj.get("type", ""))
        report = self.report
        if kind == "thread.started":
            report.session_id = str(obj.get("thread_id", ""))[:200]
            events = [Event(SYSTEM, "session started", {"session_id": report.session_id})]
            if self.resume_id and report.session_id != self.resume_id:
                # A thread *name* Codex does not know starts a new session without a word.
                events.append(
                    Event(SYSTEM, f"asked to resume {self.resume_id}; Codex started a new session")
                )
            return events
        if kind in ("item.started", "item.updated", "item.completed"):
            item = obj.get("item")
            return self._item(kind, item) if isinstance(item, dict) else []
        if kind == "turn.completed":
            usage = dict_at(obj, "usage")
            # A running total for the whole session, not this turn's share: set, do not add.
            report.usage.input_tokens = to_int(usage.get("input_tokens"))
            report.usage.output_tokens = to_int(usage.get("output_tokens"))
            report.usage.cache_read_tokens = to_int(usage.get("cached_input_tokens"))
            report.usage.cache_write_tokens = to_int(usage.get("cache_write_input_tokens"))
            report.usage.turns = (report.usage.turns or 0) + 1
            if not self.failed:
                report.success = True
            return [Event(USAGE, "", report.usage.as_data())]
        if kind in ("turn.failed", "error"):
            error = obj.get("error")
            message = str(error.get("message", "")) if isinstance(error, dict) else ""
            message = message or str(obj.get("message", "")) or kind
            if kind == "turn.failed" or not message.startswith("Reconnecting"):
                self._fail(message)
            return [Event(ERROR, clip(message, MAX_EVENT_TEXT), {"type": kind})]
        return []

    def _fail(self, message: str) -> None:
        report = self.report
        self.failed = True
        report.success = False
        report.error = message[-4000:]
        report.error_type = _classify(message) or report.error_type
        if report.error_type == "rate_limited":
            report.retry_after = _retry_after(message) or report.retry_after

    def _item(self, phase: str, item: dict[str, Any]) -> list[Event]:
        kind = str(item.get("type") or item.get("item_type") or "")
        read = _ITEM_READERS.get(kind)
        return read(self, phase, item, str(item.get("id", ""))) if read else []

    def _agent_message(self, phase: str, item: dict[str, Any], item_id: str) -> list[Event]:
        text = str(item.get("text", ""))
        if phase != COMPLETED or not text.strip():
            return []
        self.report.final_text = text
        return [Event(MESSAGE, clip(text, MAX_EVENT_TEXT))]

    def _command(self, phase: str, item: dict[str, Any], item_id: str) -> list[Event]:
        if phase == STARTED:
            command = _shown_command(str(item.get("command", "")))
            summary = clip(command.replace("\n", " "), MAX_SUMMARY)
            return [Event(TOOL_CALL, summary, {"name": "shell", "id": item_id})]
        if phase != COMPLETED:
            return []
        exit_code = item.get("exit_code")
        output = clip(str(item.get("aggregated_output") or ""), MAX_TOOL_RESULT_TEXT)
        failed = exit_code not in (0, None) or item.get("status") != "completed"
        data = {"id": item_id, "is_error": failed, "exit_code": exit_code}
        return [Event(TOOL_RESULT, output, data)]

    def _file_change(self, phase: str, item: dict[str, Any], item_id: str) -> list[Event]:
        if phase != COMPLETED:
            return []
        changes = [c for c in item.get("changes") or [] if isinstance(c, dict)]
        shown = ", ".join(f"{c.get('kind', 'update')} {c.get('path', '')}" for c in changes)
        status = str(item.get("status", ""))
        return [
            Event(TOOL_CALL, clip(shown, MAX_SUMMARY), {"name": "apply_patch", "id": item_id}),
            Event(TOOL_RESULT, status, {"id": item_id, "is_error": status != "completed"}),
        ]

    def _mcp_call(self, phase: str, item: dict[str, Any], item_id: str) -> list[Event]:
        if phase == STARTED:
            name = f"{item.get('server', 'mcp')}.{item.get('tool', 'tool')}"
            summary = summarize_input(item.get("arguments"))
            return [Event(TOOL_CALL, summary, {"name": name, "id": item_id})]
        if phase != COMPLETED:
            return []
        error = item.get("error")
        text = error.get("message", "") if isinstance(error, dict) else ""
        output = clip(str(text or item.get("result") or ""), MAX_TOOL_RESULT_TEXT)
        failed = bool(error) or item.get("status") == "failed"
        return [Event(TOOL_RESULT, output, {"id": item_id, "is_error": failed})]

    def _web_search(self, phase: str, item: dict[str, Any], item_id: str) -> list[Event]:
        if phase != COMPLETED:
            return []
        query = clip(str(item.get("query", "")), MAX_SUMMARY)
        return [Event(TOOL_CALL, query, {"name": "web_search", "id": item_id})]

    def _todo_list(self, phase: str, item: dict[str, Any], item_id: str) -> list[Event]:
        if phase != COMPLETED:
            return []
        lines = [
            f"[{'x' if entry.get('completed') else ' '}] {entry.get('text', '')}"
            for entry in item.get("items") or []
            if isinstance(entry, dict)
        ]
        return [Event(SYSTEM, clip("\n".join(lines), MAX_EVENT_TEXT), {"type": "plan"})]

    def _reasoning(self, phase: str, item: dict[str, Any], item_id: str) -> list[Event]:
        text = str(item.get("text", ""))
        if phase != COMPLETED or not text.strip():
            return []
        return [Event(SYSTEM, clip(text, MAX_EVENT_TEXT), {"type": "reasoning"})]

    def _warning(self, phase: str, item: dict[str, Any], item_id: str) -> list[Event]:
        """Codex's `error` items are warnings ("Model metadata … not found"); the run goes on."""
        if phase != COMPLETED:
            return []
        text = clip(str(item.get("message", "")), MAX_EVENT_TEXT)
        return [Event(SYSTEM, text, {"type": "warning"})]

    def finish(self, exit_code: int | None, stdout: str, stderr: str) -> Report:
        report = self.report
        if self.resume_id and any(text in stderr for text in RESUME_MISSING):
            report.resume_refused = True
        if exit_code not in (0, None):
            report.success = False
            if not report.error:
                report.error = stderr.strip()[-4000:] or f"codex exited with status {exit_code}"
            if not report.error_type:
                report.error_type = _classify(report.error) or _classify(stderr)
        return report


_ItemReader = Callable[[CodexReader, str, dict[str, Any], str], list[Event]]
# How each kind of item reads; kinds not here are not shown.
_ITEM_READERS: dict[str, _ItemReader] = {
    "agent_message": CodexReader._agent_message,
    "assistant_message": CodexReader._agent_message,
    "command_execution": CodexReader._command,
    "file_change": CodexReader._file_change,
    "mcp_tool_call": CodexReader._mcp_call,
    "web_search": CodexReader._web_search,
    "todo_list": CodexReader._todo_list,
    "reasoning": CodexReader._reasoning,
    "error": CodexReader._warning,
}


class CodexKind(AgentKind):
    name = "codex"
    program = "codex"
    description = "OpenAI Codex CLI"
    key_env = ("OPENAI_API_KEY", "CODEX_API_KEY")
    env_prefixes = ("OPENAI_", "CODEX_")
    supports_resume = True
    usage_is_session_total = True

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        if (own := self.profile_argv(profile, ctx)) is not None:
            return own
        if ctx.role == REVIEWER:
            sandbox = "read-only"
        else:
            sandbox = "danger-full-access" if ctx.sandboxed else "workspace-write"
        argv = [profile.program or self.program, "exec"]
        if ctx.session_id:
            argv.append("resume")
        argv += ["--json", "--skip-git-repo-check", "-c", "analytics.enabled=false"]
        argv += profile.render(["--model={model}"], ctx.values)
        argv += profile.render(profile.extra_args, ctx.values)
        if ctx.session_id:
            # `exec resume` has no --sandbox; the last `-c` of a key wins, so this goes last.
            return argv + ["-c", f'sandbox_mode="{sandbox}"', ctx.session_id, "-"]
        # The flag beats any `-c sandbox_mode=…` of the profile; a second --sandbox is an error.
        return argv + ["--sandbox", sandbox, "-"]

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        return CodexReader(model=_model_of(profile), resume_id=ctx.session_id)
