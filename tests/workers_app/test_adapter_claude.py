"""The `claude` adapter against the real Claude Code CLI and a stand-in Messages API.

Each slow test runs the pinned `claude -p` with the adapter's argv and env in a fresh git
repository, HOME in a temporary folder, the model API on 127.0.0.1; the output goes through the
adapter's reader as the worker feeds it. The fast tests read recorded output
(tests/agents/recordings/claude/, made by its record.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from tests.standins.anthropic_api import (
    AUTH_ERROR,
    FINAL_BUILDER_TEXT,
    HELLO_LINE,
    RATE_LIMIT_ERROR,
    REVIEW_NOTES,
    AnthropicStandIn,
    conversation_text,
)
from workers_app.adapters.base import (
    ERROR,
    MESSAGE,
    SYSTEM,
    TOOL_CALL,
    TOOL_RESULT,
    USAGE,
    Event,
    Report,
    RunContext,
)
from workers_app.adapters.claude import ClaudeKind, ClaudeReader
from workers_app.profiles import AgentProfile, template_values

RECORDINGS = Path(__file__).resolve().parent.parent / "agents" / "recordings" / "claude"
KIND = ClaudeKind()


@dataclass
class Run:
    argv: list[str]
    exit_code: int
    events: list[Event]
    report: Report
    stderr: str


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.name", "Test Builder")
    git(path, "config", "user.email", "builder@example.com")
    (path / "README").write_text("hi\n")
    git(path, "add", "README")
    git(path, "commit", "-qm", "init")
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def run_claude(agent_cli_bin: Path, repo: Path, home: Path):
    """Run the real CLI once as the worker would; returns what the reader made of it."""

    def run(
        api: AnthropicStandIn,
        *,
        role: str = "builder",
        session_id: str = "",
        sandboxed: bool = False,
        max_turns: int = 10,
        budget_usd: Decimal | None = None,
        retries: int = 0,
        prompt: str = "Create hello.txt and commit it.",
    ) -> Run:
        profile = AgentProfile(
            "claude", kind="claude", program=str(agent_cli_bin / "claude"), max_turns=max_turns
        )
        values = template_values(
            workspace=repo,
            max_turns=max_turns,
            session_id=session_id,
            budget_usd=budget_usd if budget_usd is not None else "",
        )
        ctx = RunContext(
            role=role,
            workspace=repo,
            values=values,
            session_id=session_id,
            sandboxed=sandboxed,
            as_root=os.geteuid() == 0,
            budget_usd=budget_usd,
        )
        KIND.prepare(profile, ctx)
        argv = KIND.argv(profile, ctx)
        env = {
            "PATH": f"{agent_cli_bin}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-key",
            **KIND.env(profile, ctx),
            # Claude Code retries a failed call itself (the adapter allows 2); tests choose.
            "CLAUDE_CODE_MAX_RETRIES": str(retries),
        }
        done = subprocess.run(
            argv,
            input=prompt,
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
        )
        reader = KIND.reader(profile, ctx)
        events: list[Event] = []
        for line in done.stdout.splitlines():
            events += reader.feed(line)
        for line in done.stderr.splitlines():
            events += reader.feed_stderr(line)
        report = reader.finish(done.returncode, done.stdout[-8000:], done.stderr[-8000:])
        return Run(argv, done.returncode, events, report, done.stderr)

    return run


def kinds(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


# -- the real CLI ------------------------------------------------------------------------------


@pytest.mark.slow
def test_builder_writes_and_commits_the_file(run_claude, repo: Path) -> None:
    with AnthropicStandIn("builder") as api:
        run = run_claude(api)

    assert run.exit_code == 0, run.stderr
    assert "acceptEdits" in run.argv and "bypassPermissions" not in run.argv
    assert (repo / "hello.txt").read_text() == HELLO_LINE + "\n"
    assert "Add hello.txt" in git(repo, "log", "--oneline")
    assert git(repo, "status", "--porcelain") == ""
    report = run.report
    assert report.success is True and report.error_type == ""
    assert report.final_text == FINAL_BUILDER_TEXT
    assert report.session_id
    assert report.usage.input_tokens == 4 * 120  # four model calls, as the stand-in counts
    assert report.usage.output_tokens and report.usage.cache_read_tokens == 4 * 30
    assert report.usage.cost_usd and report.usage.cost_usd > 0
    assert report.usage.turns == 4 and report.usage.model
    calls = kinds(run.events, TOOL_CALL)
    assert [c.data["name"] for c in calls] == ["Write", "Bash", "Bash"]
    assert calls[1].text == "git add hello.txt"
    assert all(not r.data["is_error"] for r in kinds(run.events, TOOL_RESULT))
    assert kinds(run.events, MESSAGE)[-1].text == FINAL_BUILDER_TEXT
    assert kinds(run.events, USAGE)[0].data["cost_usd"]
    assert [r.path.split("?")[0] for r in api.requests] == ["/v1/messages"] * 4


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="IS_SANDBOX matters only as root")
def test_sandboxed_builder_bypasses_permissions_as_root(run_claude, repo: Path) -> None:
    with AnthropicStandIn("builder") as api:
        run = run_claude(api, sandboxed=True)

    assert "bypassPermissions" in run.argv
    assert run.report.success is True, run.report.error
    assert "Add hello.txt" in git(repo, "log", "--oneline")
    init = kinds(run.events, SYSTEM)[0]
    assert init.data["permission_mode"] == "bypassPermissions"


@pytest.mark.slow
def test_reviewer_cannot_write_or_commit_and_gives_a_verdict(run_claude, repo: Path) -> None:
    log_before = git(repo, "log", "--oneline")
    with AnthropicStandIn("reviewer") as api:
        api.reviewer_attempts = [
            ("Write", {"file_path": "{workspace}/" + REVIEW_NOTES, "content": "notes\n"}),
            ("Bash", {"command": "touch {workspace}/touched.txt"}),
            ("Bash", {"command": "git diff --output=diff.txt"}),
            ("Bash", {"command": "git commit --allow-empty -m sneaky"}),
            ("Bash", {"command": "git log --oneline"}),  # reading is fine
        ]
        run = run_claude(api, role="reviewer")

    assert not (repo / REVIEW_NOTES).exists()
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "log", "--oneline") == log_before
    report = run.report
    assert report.success is True
    assert report.final_text.rstrip().endswith("```")
    assert '"verdict": "PASS"' in report.final_text
    results = kinds(run.events, TOOL_RESULT)
    assert [r.data["is_error"] for r in results] == [True, True, True, True, False]
    assert "No such tool available: Write" in results[0].text
    assert report.permission_denials == [
        f"Bash: touch {repo}/touched.txt",
        "Bash: git diff --output=diff.txt",
        "Bash: git commit --allow-empty -m sneaky",
    ]
    assert sum("permission denied" in e.text for e in kinds(run.events, SYSTEM)) == 3
    tools = [t["name"] for t in api.conversations[0]["tools"]]
    assert "Write" not in tools and "Edit" not in tools and "Bash" in tools


@pytest.mark.slow
def test_resume_sends_the_earlier_conversation(run_claude, repo: Path) -> None:
    with AnthropicStandIn("builder") as api:
        first = run_claude(api)
        calls_before = len(api.conversations)
        second = run_claude(api, session_id=first.report.session_id, prompt="Add one more file.")

    assert first.report.success is True
    assert "--resume" in second.argv
    assert second.report.success is True, second.report.error
    assert second.report.session_id == first.report.session_id
    resumed = api.conversations[calls_before]
    sent = conversation_text(resumed)
    assert "Create hello.txt and commit it." in sent and "Add one more file." in sent
    assert HELLO_LINE in sent  # the first run's Write call went back to the model
    headers = api.requests[-1].headers
    assert headers["x-claude-code-session-id"] == first.report.session_id
    assert (repo / "hello-2.txt").exists()
    assert "Add hello-2.txt" in git(repo, "log", "--oneline")


@pytest.mark.slow
def test_resume_of_an_unknown_session_is_refused(run_claude) -> None:
    with AnthropicStandIn("builder") as api:
        run = run_claude(api, session_id="6b0a2d1e-8c53-4f7e-9d42-0f3c2a9e7b11")

    assert run.report.resume_refused is True
    assert run.report.success is False
    assert api.requests == []


@pytest.mark.slow
def test_bad_api_key_is_agent_auth(run_claude) -> None:
    with AnthropicStandIn("builder") as api:
        api.fail_always(401, AUTH_ERROR)
        run = run_claude(api)

    assert run.report.error_type == "agent_auth"
    assert run.report.success is False
    assert "Invalid API key" in run.report.error
    assert run.report.usage.model != "<synthetic>"
    assert kinds(run.events, ERROR)


@pytest.mark.slow
def test_rate_limit_is_rate_limited_with_the_cli_wait(run_claude) -> None:
    with AnthropicStandIn("builder") as api:
        api.fail_always(429, RATE_LIMIT_ERROR, **{"retry-after": "1"})
        run = run_claude(api, retries=1)

    assert run.report.error_type == "rate_limited"
    assert run.report.success is False
    assert run.report.retry_after is not None and 1 <= run.report.retry_after < 2
    assert len(api.requests) == 2  # the CLI's own retry, after Retry-After
    assert any("retry 1 of 1" in e.text for e in kinds(run.events, SYSTEM))


@pytest.mark.slow
def test_running_past_max_turns_is_max_turns(run_claude) -> None:
    with AnthropicStandIn("loop") as api:
        run = run_claude(api, max_turns=2)

    assert "--max-turns=2" in run.argv
    assert run.report.error_type == "max_turns"
    assert run.report.success is False
    assert "maximum number of turns" in run.report.error


@pytest.mark.slow
def test_spending_past_the_budget_is_budget_exceeded(run_claude) -> None:
    with AnthropicStandIn("loop", input_tokens=200_000) as api:
        run = run_claude(api, budget_usd=Decimal("0.50"))

    assert "--max-budget-usd=0.50" in run.argv
    assert run.report.error_type == "budget_exceeded"
    assert run.report.usage.cost_usd and run.report.usage.cost_usd > Decimal("0.50")


@pytest.mark.slow
def test_version_argv_prints_the_version(agent_cli_bin: Path) -> None:
    profile = AgentProfile("claude", kind="claude", program=str(agent_cli_bin / "claude"))
    done = subprocess.run(KIND.version_argv(profile), capture_output=True, text=True, timeout=30)
    assert "Claude Code" in done.stdout


# -- argv --------------------------------------------------------------------------------------


def _argv(role: str, **kw) -> list[str]:
    profile = AgentProfile("claude", kind="claude", program="claude", model=kw.pop("model", ""))
    values = template_values(
        max_turns=7, test_command=kw.pop("test_command", ""), model=profile.model
    )
    return KIND.argv(profile, RunContext(role=role, workspace=Path("."), values=values, **kw))


def test_reviewer_argv_is_read_only_even_in_the_sandbox() -> None:
    for sandboxed in (False, True):
        argv = _argv("reviewer", sandboxed=sandboxed, as_root=True, test_command="pytest -q")
        assert "bypassPermissions" not in argv and "acceptEdits" not in argv
        denied = argv[argv.index("--disallowedTools") + 1 :]
        assert {"Edit", "Write", "NotebookEdit", "Bash(git commit:*)"} <= set(denied)
        allowed = argv[argv.index("--allowedTools") + 1 : argv.index("--disallowedTools")]
        assert allowed == ["Read", "Grep", "Glob", "Bash(pytest -q:*)"]
        assert argv[argv.index("--setting-sources") + 1] == ""


def test_builder_argv_allows_git_and_the_test_command() -> None:
    argv = _argv("builder", test_command="make test", model="opus")
    allowed = argv[argv.index("--allowedTools") + 1 :]
    assert allowed[:3] == ["Bash(git add:*)", "Bash(git commit:*)", "Bash(make test:*)"]
    assert "--model=opus" in argv and "--max-turns=7" in argv
    assert not any(a.startswith("--max-budget-usd") for a in argv)
    assert _argv("builder", budget_usd=Decimal("1.5"))[-1] == "--max-budget-usd=1.50"


def test_env_sets_is_sandbox_only_for_a_sandboxed_root_builder() -> None:
    profile = AgentProfile("claude", kind="claude")
    env = KIND.env(profile, RunContext("builder", Path("."), {}, sandboxed=True, as_root=True))
    assert env["IS_SANDBOX"] == "1" and env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    env = KIND.env(profile, RunContext("reviewer", Path("."), {}, sandboxed=True, as_root=True))
    assert "IS_SANDBOX" not in env


# -- the reader, on recorded output ------------------------------------------------------------


def replay(name: str) -> tuple[list[Event], Report]:
    meta = json.loads((RECORDINGS / f"{name}.json").read_text())
    stdout = (RECORDINGS / f"{name}.stdout.jsonl").read_text()
    stderr = (RECORDINGS / f"{name}.stderr.txt").read_text()
    reader = ClaudeReader()
    events = [e for line in stdout.splitlines() for e in reader.feed(line)]
    events += [e for line in stderr.splitlines() for e in reader.feed_stderr(line)]
    return events, reader.finish(meta["exit_code"], stdout, stderr)


def test_recorded_builder_run() -> None:
    events, report = replay("builder")
    assert report.success is True and report.final_text == FINAL_BUILDER_TEXT
    assert report.session_id and report.usage.turns == 4
    assert report.usage.input_tokens == 480 and report.usage.cache_read_tokens == 120
    assert report.usage.cost_usd and report.usage.model
    assert [e.data["name"] for e in kinds(events, TOOL_CALL)] == ["Write", "Bash", "Bash"]
    assert len(kinds(events, TOOL_RESULT)) == 3


def test_recorded_reviewer_run_keeps_denials_and_verdict() -> None:
    events, report = replay("reviewer")
    assert report.success is True and '"verdict": "PASS"' in report.final_text
    assert report.permission_denials and all(
        d.startswith("Bash: ") for d in report.permission_denials
    )
    assert kinds(events, TOOL_RESULT)[0].data["is_error"] is True


def test_recorded_auth_failure() -> None:
    events, report = replay("auth_401")
    assert report.error_type == "agent_auth" and report.success is False
    assert report.usage.model != "<synthetic>"
    assert not kinds(events, MESSAGE)  # Claude Code's error text is not the agent's words
    assert "Invalid API key" in kinds(events, ERROR)[0].text


def test_recorded_rate_limit_after_a_retry() -> None:
    _, report = replay("rate_limit_429")
    assert report.error_type == "rate_limited" and report.retry_after


def test_recorded_max_turns_and_budget() -> None:
    assert replay("max_turns")[1].error_type == "max_turns"
    _, report = replay("budget")
    assert report.error_type == "budget_exceeded" and report.usage.cost_usd


def test_recorded_unknown_session() -> None:
    _, report = replay("resume_unknown")
    assert report.resume_refused is True and report.success is False


def test_recorded_root_refusal_without_is_sandbox() -> None:
    _, report = replay("root_bypass_refused")
    assert report.success is False
    assert "cannot be used with root" in report.error


def test_a_wrappers_plain_result_reads_as_success() -> None:
    reader = ClaudeReader()
    reader.feed(json.dumps({"type": "result", "result": "done", "session_id": "s-1"}))
    report = reader.finish(0, "", "")
    assert (report.success, report.final_text, report.session_id) == (True, "done", "s-1")
