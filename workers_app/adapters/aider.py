"""Aider (`aider --message-file PROMPT`), one message per run, plain-text output.

Proven against aider 0.86.2. What its output looks like and how it is read:

- stdout is plain text (`--no-pretty`): a banner (`Aider v…`, `Model: X with whole edit
  format`, `Git repo: …`), the model's reply, then `Tokens: 1.2k sent, 80 received. Cost:
  $0.00023 message, $0.00023 session.` after every call of the main model (`--no-stream`, so
  the figures are the provider's, not Aider's own estimate), then what Aider did: `Applied edit
  to hello.txt`, `Commit 3de6aa2 feat: …` (Aider commits its own edits).
- A provider error does not change the exit code (0): the output has `litellm.XxxError: …`
  (wrapped over several lines) and Aider's own gloss (`The API provider is not able to
  authenticate you.`). Rate limits and connection errors are retried by Aider for about a
  minute, printing `Retrying in N seconds...`; a later `Tokens:` line means a retry worked.
- There is no session id. Aider's memory is its chat history file (markdown, in the worktree):
  each role writes its own (`.aider.builder.chat.history.md`); that name is the reported session
  id, and `--restore-chat-history` with it resumes the conversation. The reply the worker reads
  (the verdict) is taken from that file, where Aider's own notes are quoted with `> ` and the
  model's words are not; stdout mixes the two.

Builder: `--yes-always` (Aider still never runs a suggested shell command: those need an
explicit yes). Reviewer: `--chat-mode ask` (replies are never applied as edits), `--dry-run`,
`--no-auto-commits`. Both: always a `--model` (with no model and no key Aider offers an
OpenRouter browser login and waits five minutes for it, even with stdin closed), no `.gitignore`
edits (`.aider*` goes to `.git/info/exclude` instead), no update check, analytics, release
notes, URL fetching or browser (`BROWSER=true`: Aider offers to open the URLs of error messages).
"""

from __future__ import annotations

import os
import re
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from .base import (
    ERROR,
    MAX_EVENT_TEXT,
    MAX_SUMMARY,
    MESSAGE,
    OUTPUT,
    REVIEWER,
    SYSTEM,
    TOOL_CALL,
    TOOL_RESULT,
    USAGE,
    AgentKind,
    Event,
    Reader,
    Report,
    RunContext,
    classify_error_text,
    clip,
    seconds_in,
    to_decimal,
)

if TYPE_CHECKING:
    from ..profiles import AgentProfile

_NUMBER = r"(\d+(?:\.\d+)?k?)"
TOKENS = re.compile(
    rf"^Tokens: {_NUMBER} sent(?:, {_NUMBER} cache write)?(?:, {_NUMBER} cache hit)?, "
    rf"{_NUMBER} received\."
)
COST = re.compile(r"Cost: \$(\d+(?:\.\d+)?) message, \$(\d+(?:\.\d+)?) session\.")
BANNER = re.compile(
    r"^(Aider v\d|(Main |Weak |Editor )?[Mm]odel: |Git repo: |Repo-map: |Added .* to the chat|"
    r"Restored previous conversation history|Warning: |You can skip this check|"
    r"HTTPSConnectionPool\(host='raw\.githubusercontent\.com')"
)
MODEL = re.compile(r"^(?:Main )?[Mm]odel: (\S+)")
PROVIDER_ERROR = re.compile(r"^litellm\.(\w+Error|Timeout)\b")
# Aider's gloss after a provider error's message ends the message (which wraps over lines).
ERROR_END = re.compile(
    r"^(The API provider|Retrying in |Insufficient credits|OpenRouter or the upstream)"
)
APPLIED = re.compile(r"^Applied edit to (.+)$")
NOT_APPLIED = re.compile(r"^Did not apply edit to (.+?) \(--dry-run\)$")
COMMIT = re.compile(r"^Commit ([0-9a-f]{7,40}) (.*)$")
EDIT_FAILED = re.compile(r"^(The LLM did not conform to the edit format|Only \d+ reflections)")
RETRY_AFTER = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s|m)\b", re.IGNORECASE)
HISTORY_START = "# aider chat started at "
SESSION_NAME = re.compile(r"^\.aider\.[\w.-]+\.chat\.history\.md$")


def history_file(role: str) -> str:
    """The chat history file a role keeps in its worktree: Aider's idea of a session."""
    return f".aider.{role}.chat.history.md"


def _count(figure: str) -> int:
    """`852` or `1.2k` (Aider rounds thousands) as a whole number of tokens."""
    if figure.endswith("k"):
        return int(Decimal(figure[:-1]) * 1000)
    return int(figure)


def _retry_after(text: str) -> float | None:
    return seconds_in(RETRY_AFTER.search(text or ""))


def last_reply(history: str) -> str:
    """The model's last words in the last session of a chat history file.

    Aider writes the person's message as `#### …` lines, its own notes as `> …` lines, and the
    model's reply as they came.
    """
    session = history.rsplit(HISTORY_START, 1)[-1].splitlines()[1:]  # after the start's date
    replies: list[list[str]] = [[]]
    for line in session:
        if line.startswith(("> ", "#### ")) or line in (">", "####"):
            if replies[-1]:
                replies.append([])
            continue
        replies[-1].append(line)
    texts = ["\n".join(lines).strip() for lines in replies]
    return next((text for text in reversed(texts) if text), "")


class AiderReader(Reader):
    """Reads Aider's plain stdout into events; its chat history file gives the final reply."""

    def __init__(
        self, *, history: Path | None = None, session_id: str = "", resuming: bool = False
    ) -> None:
        super().__init__()
        self.history = history
        self.report.session_id = session_id
        self.resuming = resuming
        self._restored = False
        self._banner = True
        # Until the first `Tokens:` line, the lines after the banner are held as the model's
        # reply (printed at once, `--no-stream`); after it, lines are Aider's notes, shown live.
        self._reply: list[str] = []
        self._replying = True
        self._last_reply = ""
        self._error: list[str] = []  # a provider error's message, as long as it goes on
        self._error_open = False
        self._edit_failed = ""
        self._session_cost: Decimal | None = None

    def feed(self, line: str) -> list[Event]:
        text = line.rstrip("\n").rstrip()
        if not text.strip():
            if self._reply:
                self._reply.append("")
            return []
        events = self._error_goes_on(text)
        if events is not None:
            return events
        if self._banner and BANNER.match(text):
            return self._banner_line(text)
        self._banner = False
        events = self._status_line(text)
        if events is not None:
            return events
        if not self._replying:
            return [Event(OUTPUT, clip(text, MAX_EVENT_TEXT))]
        self._reply.append(text)
        return []

    def _error_goes_on(self, text: str) -> list[Event] | None:
        """A line of the provider error being printed; None once the error is over."""
        if not self._error_open:
            return None
        if not ERROR_END.match(text) and not PROVIDER_ERROR.match(text):
            self._error.append(text)
            return [Event(ERROR, clip(text, MAX_EVENT_TEXT))]
        self._close_error()
        return None

    def _banner_line(self, text: str) -> list[Event]:
        if text.startswith("Restored previous conversation history"):
            self._restored = True
        model = MODEL.match(text)
        if model and not self.report.usage.model:
            self.report.usage.model = model.group(1)[:100]
        return [Event(SYSTEM, clip(text, MAX_EVENT_TEXT))]

    def _status_line(self, text: str) -> list[Event] | None:
        """Aider's own line (token counts, an error, an edit or commit); None: the model's."""
        tokens = TOKENS.match(text)
        if tokens:
            return self._tokens(tokens, text)
        if PROVIDER_ERROR.match(text):
            events = self._flush_reply(as_message=False)
            self._replying = False
            self._error, self._error_open = [text], True
            return [*events, Event(ERROR, clip(text, MAX_EVENT_TEXT))]
        if ERROR_END.match(text):
            return [Event(ERROR if not text.startswith("Retrying") else SYSTEM, text)]
        if EDIT_FAILED.match(text):
            self._edit_failed = text
            return [*self._flush_reply(as_message=True), Event(ERROR, text)]
        return self._action(text) or None

    def feed_stderr(self, line: str) -> list[Event]:
        if PROVIDER_ERROR.match(line.strip()):
            return self.feed(line)
        return super().feed_stderr(line)

    def finish(self, exit_code: int | None, stdout: str, stderr: str) -> Report:
        report = self.report
        self._close_error()
        # Asked to resume, Aider found no chat history to restore (or was not told to).
        report.resume_refused = self.resuming and not self._restored
        reply = self._reply_from_history() or self._last_reply or "\n".join(self._reply).strip()
        report.final_text = reply
        if self._session_cost is not None:
            report.usage.cost_usd = self._session_cost
        if report.error_type or self._error:
            report.success = False
        elif self._edit_failed:
            report.success = False
            report.error = report.error or self._edit_failed
        elif report.usage.turns:
            report.success = True
        elif exit_code not in (0, None):
            report.success = False
            tail = (stderr or stdout).strip().splitlines()
            report.error = report.error or (tail[-1] if tail else f"aider exited {exit_code}")
            report.error_type = classify_error_text(stderr or "")
        return report

    def _tokens(self, found: re.Match[str], text: str) -> list[Event]:
        """A main-model call answered: the reply so far is complete, any earlier error over."""
        events = self._flush_reply(as_message=True)
        self._replying = False
        usage = self.report.usage
        sent, cache_write, cache_hit, received = found.groups()
        usage.add_tokens(
            input=_count(sent),
            output=_count(received),
            cache_read=_count(cache_hit) if cache_hit else None,
            cache_write=_count(cache_write) if cache_write else None,
        )
        usage.turns = (usage.turns or 0) + 1
        cost = COST.search(text)
        if cost:
            self._session_cost = to_decimal(cost.group(2))
            # Known while it runs, so the worker can stop a run that spends past its budget.
            usage.cost_usd = self._session_cost
        # A retried call that went through clears the error it had printed.
        self._error, self.report.error, self.report.error_type = [], "", ""
        self.report.retry_after = None
        data = usage.as_data()
        if self._session_cost is not None:
            data["cost_usd"] = f"{self._session_cost:f}"
        return [*events, Event(USAGE, text, data)]

    def _action(self, text: str) -> list[Event]:
        """Aider's own acts: edits applied (or not), its commits, a lone cost line."""
        if text.startswith("Cost: $"):  # after a cache hit *and* write it has its own line
            cost = COST.search(text)
            if cost:
                self._session_cost = to_decimal(cost.group(2))
            return [Event(USAGE, text, self.report.usage.as_data())]
        applied = APPLIED.match(text)
        if applied:
            path = applied.group(1)
            return [
                *self._flush_reply(as_message=False),
                Event(TOOL_CALL, clip(path, MAX_SUMMARY), {"name": "edit", "summary": path}),
                Event(TOOL_RESULT, text, {"id": "", "is_error": False}),
            ]
        not_applied = NOT_APPLIED.match(text)
        if not_applied:
            return [Event(TOOL_RESULT, text, {"id": "", "is_error": True})]
        commit = COMMIT.match(text)
        if commit:
            summary = f"{commit.group(1)} {commit.group(2)}"
            return [
                *self._flush_reply(as_message=False),
                Event(
                    TOOL_CALL, clip(summary, MAX_SUMMARY), {"name": "commit", "summary": summary}
                ),
                Event(TOOL_RESULT, text, {"id": "", "is_error": False}),
            ]
        return []

    def _flush_reply(self, *, as_message: bool) -> list[Event]:
        """The lines held since Aider last spoke: a reply (before `Tokens:`) or Aider's notes."""
        text, self._reply = "\n".join(self._reply).strip(), []
        if not text:
            return []
        if as_message:
            self._last_reply = text
            return [Event(MESSAGE, clip(text, MAX_EVENT_TEXT))]
        return [Event(OUTPUT, clip(text, MAX_EVENT_TEXT))]

    def _close_error(self) -> None:
        if not self._error_open:
            return
        self._error_open = False
        message = " ".join(part.strip() for part in self._error)
        self.report.error = clip(message, MAX_EVENT_TEXT)
        self.report.error_type = classify_error_text(message)
        if self.report.error_type == "rate_limited":
            self.report.retry_after = _retry_after(message)

    def _reply_from_history(self) -> str:
        if self.history is None:
            return ""
        try:
            text = self.history.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return last_reply(text)


class AiderKind(AgentKind):
    name = "aider"
    program = "aider"
    description = "Aider"
    key_env = (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "DEEPSEEK_API_KEY",
        "OPENROUTER_API_KEY",
    )
    env_prefixes = ("AIDER_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "DEEPSEEK_", "OPENROUTER_")
    # Aider has no sessions, only its chat history file; restoring it works
    # (`--restore-chat-history`), but it is a markdown transcript read back, not the agent's own
    # session, so the worker sends the whole rework prompt to a fresh run.
    supports_resume = False

    def argv(self, profile: AgentProfile, ctx: RunContext) -> list[str]:
        if (own := self.profile_argv(profile, ctx)) is not None:
            return own
        argv = [
            profile.program or self.program,
            f"--model={self._model(profile, ctx)}",
            "--yes-always",
            "--no-pretty",
            "--no-stream",  # the provider's token counts and cost, not Aider's estimate
            "--no-gitignore",
            "--no-check-update",
            "--no-analytics",
            "--no-show-release-notes",
            "--no-show-model-warnings",
            "--no-detect-urls",
            "--disable-playwright",
            "--no-fancy-input",
            "--chat-history-file",
            history_file(ctx.role),
        ]
        if self._resumable(ctx):
            argv.append("--restore-chat-history")
        if ctx.role == REVIEWER:
            argv += [
                "--chat-mode",
                "ask",
                "--dry-run",
                "--no-auto-commits",
                "--no-dirty-commits",
                "--no-auto-lint",
                "--no-auto-test",
                "--no-suggest-shell-commands",
            ]
        argv += profile.render(profile.extra_args, ctx.values)
        return argv + ["--message-file", ctx.values.get("prompt_file", "")]

    def reader(self, profile: AgentProfile, ctx: RunContext) -> Reader:
        name = history_file(ctx.role)
        return AiderReader(
            history=Path(ctx.workspace) / name, session_id=name, resuming=bool(ctx.session_id)
        )

    def env(self, profile: AgentProfile, ctx: RunContext) -> dict[str, str]:
        env = {
            "AIDER_CHECK_UPDATE": "false",
            "AIDER_ANALYTICS": "false",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm's price list, not GitHub's
            "BROWSER": "true",  # Aider offers to open URLs of error messages; open nothing
        }
        if self._model(profile, ctx).startswith("openrouter/") and not _env_value(
            profile, "OPENROUTER_API_KEY"
        ):
            # Without the key Aider starts a browser login to OpenRouter and waits for it.
            env["OPENROUTER_API_KEY"] = "missing-openrouter-key"
        return env

    def prepare(self, profile: AgentProfile, ctx: RunContext) -> None:
        """Keep Aider's files (`.aider*`: chat history, tags cache) out of every commit."""
        exclude = _git_info_exclude(Path(ctx.workspace))
        if exclude is None:
            return
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if ".aider*" not in lines:
            exclude.parent.mkdir(parents=True, exist_ok=True)
            exclude.write_text("\n".join([*lines, ".aider*"]) + "\n")

    @staticmethod
    def _model(profile: AgentProfile, ctx: RunContext) -> str:
        """The model to name; with none configured, Aider's own choice by key, never a login."""
        model = ctx.values.get("model") or profile.model or _env_value(profile, "AIDER_MODEL")
        if model:
            return model
        for key, default in (
            ("ANTHROPIC_API_KEY", "sonnet"),
            ("DEEPSEEK_API_KEY", "deepseek"),
            ("OPENAI_API_KEY", "gpt-4o"),
            ("GEMINI_API_KEY", "gemini/gemini-2.5-pro"),
            ("OPENROUTER_API_KEY", "openrouter/anthropic/claude-sonnet-4"),
        ):
            if _env_value(profile, key):
                return default
        return "gpt-4o"  # no key at all: a quick authentication error, not a browser login

    @staticmethod
    def _resumable(ctx: RunContext) -> bool:
        """Asked to resume, and the session's chat history is there to restore."""
        name = ctx.session_id
        return bool(
            name
            and SESSION_NAME.match(name)
            and name == history_file(ctx.role)
            and (Path(ctx.workspace) / name).is_file()
        )


def _env_value(profile: AgentProfile, name: str) -> str:
    """A variable as the agent will see it: the profile's env over the worker's."""
    return profile.env.get(name) or os.environ.get(name, "")


def _git_info_exclude(path: Path) -> Path | None:
    """The worktree's `info/exclude` (shared by all worktrees of the repository)."""
    done = subprocess.run(
        ["git", "rev-parse", "--git-common-dir"],
        cwd=path,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    common = Path(done.stdout.strip())
    if not common.is_absolute():
        common = path / common
    return common / "info" / "exclude"
