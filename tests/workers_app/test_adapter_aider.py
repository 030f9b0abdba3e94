"""The aider adapter against the real Aider CLI and a stand-in OpenAI chat-completions API.

Each slow test runs the pinned `aider` in a fresh git repository (one commit) with HOME in a
temporary folder, feeds its output through the adapter's reader and checks the report. The
fast tests read output recorded from those runs (tests/agents/recordings/aider/).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.standins.openai_chat import (
    AUTH_ERROR,
    BUILDER_FINAL,
    COMMIT_MESSAGE,
    COMPLETION_TOKENS,
    HELLO_FILE,
    HELLO_TEXT,
    PROMPT_TOKENS,
    RATE_LIMIT_ERROR,
    REVIEWER_WRITE,
    VERDICT,
    OpenAIChatStandIn,
)
from workers_app.adapters.aider import AiderKind, AiderReader, history_file, last_reply
from workers_app.adapters.base import (
    ERROR,
    MESSAGE,
    TOOL_CALL,
    USAGE,
    Event,
    Report,
    RunContext,
)
from workers_app.profiles import BUILTIN_PROFILES, AgentProfile, template_values

RECORDINGS = Path(__file__).resolve().parent.parent / "agents" / "recordings" / "aider"
MODEL = "openai/gpt-4o-mini"
KIND = AiderKind()


@dataclass
class Run:
    report: Report
    events: list[Event]
    stdout: str
    stderr: str
    exit_code: int | None


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.name", "Builder Bot")
    _git(path, "config", "user.email", "bot@example.com")
    (path / "README.md").write_text("# demo\n")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "initial commit")
    return path


@pytest.fixture
def profile(agent_cli_bin: Path) -> AgentProfile:
    return replace(BUILTIN_PROFILES["aider"], program=str(agent_cli_bin / "aider"), model=MODEL)


@pytest.fixture
def api():
    with OpenAIChatStandIn() as stand_in:
        yield stand_in


def run_aider(
    profile: AgentProfile,
    api: OpenAIChatStandIn,
    repo: Path,
    *,
    role: str = "builder",
    prompt: str = "Create hello.txt with a greeting.",
    session_id: str = "",
    kill_after: float = 90.0,
) -> Run:
    """One run as the worker does it: prepare, argv, an allowlisted env, stdin closed."""
    home = repo.parent / "home"
    home.mkdir(exist_ok=True)
    prompt_file = repo.parent / f"prompt-{role}.md"
    prompt_file.write_text(prompt + "\n")
    ctx = RunContext(
        role=role,
        workspace=repo,
        values=template_values(prompt_file=prompt_file, workspace=repo, model=profile.model),
        session_id=session_id,
        as_root=os.geteuid() == 0,
    )
    KIND.prepare(profile, ctx)
    env = {
        "PATH": f"{Path(profile.program).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "OPENAI_API_BASE": f"{api.url}/v1",
        "OPENAI_API_KEY": "sk-stand-in",
        **KIND.env(profile, ctx),
    }
    process = subprocess.Popen(
        KIND.argv(profile, ctx),
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:  # as the worker's time limit would
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    reader = KIND.reader(profile, ctx)
    events: list[Event] = []
    for line in stdout.splitlines():
        events += reader.feed(line)
    for line in stderr.splitlines():
        events += reader.feed_stderr(line)
    report = reader.finish(process.returncode, stdout[-8000:], stderr[-8000:])
    return Run(report, events, stdout, stderr, process.returncode)


def _tool_calls(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.data["name"], e.data["summary"]) for e in events if e.kind == TOOL_CALL]


def _verdict_block() -> str:
    return f"```json\n{json.dumps(VERDICT, indent=2)}\n```"


@pytest.mark.slow
def test_builder_writes_and_commits_and_a_resume_restores_the_conversation(profile, api, repo):
    first = run_aider(profile, api, repo)

    assert (repo / HELLO_FILE).read_text() == HELLO_TEXT + "\n"
    assert _git(repo, "log", "-1", "--format=%s").strip() == COMMIT_MESSAGE  # Aider's own commit
    assert _git(repo, "status", "--porcelain") == ""  # no .aider* files, nothing uncommitted
    report = first.report
    assert report.success is True, first.stdout
    assert report.error_type == ""
    assert report.session_id == history_file("builder")
    assert report.final_text.endswith(BUILDER_FINAL)
    assert report.usage.model == MODEL
    assert report.usage.input_tokens == PROMPT_TOKENS
    assert report.usage.output_tokens == COMPLETION_TOKENS
    assert report.usage.turns == 1
    assert report.usage.cost_usd is not None and report.usage.cost_usd > 0
    assert ("edit", HELLO_FILE) in _tool_calls(first.events)
    assert any(name == "commit" and COMMIT_MESSAGE in s for name, s in _tool_calls(first.events))
    assert any(e.kind == MESSAGE and HELLO_TEXT in e.text for e in first.events)
    assert not any(r.json.get("stream") for r in api.requests)  # --no-stream: exact usage

    api.requests.clear()
    second = run_aider(
        profile, api, repo, prompt="Rework: make it friendlier.", session_id=report.session_id
    )

    assert second.report.resume_refused is False
    assert second.report.success is True, second.stdout
    assert "Restored previous conversation history." in second.stdout
    messages = api.agent_requests[0]["messages"]
    sent = [m["content"] for m in messages]
    assert "Create hello.txt with a greeting." in "\n".join(sent)  # the first run's message
    assert any(HELLO_TEXT in text for text in sent)  # and the model's reply to it
    asked = [m["content"] for m in messages if m["role"] == "user"]
    assert asked[-1].startswith("Rework: make it friendlier.")
    assert _git(repo, "status", "--porcelain") == ""


@pytest.mark.slow
def test_reviewer_cannot_write_and_ends_with_the_verdict(profile, api, repo):
    run = run_aider(profile, api, repo, role="reviewer", prompt="Review the change.")

    assert not (repo / HELLO_FILE).exists()  # the scripted write was not applied
    assert _git(repo, "status", "--porcelain") == ""
    assert _git(repo, "log", "--format=%s").splitlines() == ["initial commit"]
    assert REVIEWER_WRITE in run.stdout  # the model did ask for the write
    assert api.purpose(api.agent_requests[0]) == "reviewer"  # ask mode's system prompt
    report = run.report
    assert report.success is True, run.stdout
    assert report.final_text.endswith(_verdict_block())
    assert report.session_id == history_file("reviewer")
    assert report.usage.input_tokens == PROMPT_TOKENS
    assert "edit" not in [name for name, _ in _tool_calls(run.events)]


@pytest.mark.slow
def test_unauthorized_key_is_agent_auth_although_aider_exits_0(profile, api, repo):
    api.fail_always(401, AUTH_ERROR)

    run = run_aider(profile, api, repo)

    assert run.exit_code == 0
    assert run.report.error_type == "agent_auth"
    assert run.report.success is False
    assert "Incorrect API key" in run.report.error
    assert not (repo / HELLO_FILE).exists()
    assert any(e.kind == ERROR for e in run.events)


@pytest.mark.slow
def test_rate_limit_is_rate_limited_with_the_providers_retry_after(profile, api, repo):
    # Aider retries a 429 itself for about a minute; the worker's time limit ends it sooner.
    # Its start-up alone takes 5-10 s on a busy machine, so the limit leaves room for that.
    api.fail_always(429, RATE_LIMIT_ERROR, **{"retry-after": "1"})

    run = run_aider(profile, api, repo, kill_after=30)

    assert "litellm.RateLimitError" in run.stdout
    assert run.report.error_type == "rate_limited"
    assert run.report.retry_after == 20  # "Please try again in 20s." (wrapped over lines)
    assert run.report.success is False


# Fast: the reader on recorded output.


def _read(name: str, *, history: str = "", exit_code: int = 0) -> tuple[Report, list[Event]]:
    reader = AiderReader(
        history=RECORDINGS / history if history else None, session_id=history_file("builder")
    )
    events: list[Event] = []
    stdout = (RECORDINGS / f"{name}.stdout").read_text()
    for line in stdout.splitlines():
        events += reader.feed(line)
    return reader.finish(exit_code, stdout, ""), events


def test_reader_on_a_recorded_builder_run():
    report, events = _read("builder")

    assert report.success is True
    assert report.usage.model == MODEL
    assert (report.usage.input_tokens, report.usage.output_tokens) == (1200, 80)
    assert str(report.usage.cost_usd) == "0.00023"
    assert report.final_text.endswith(BUILDER_FINAL)
    assert ("edit", HELLO_FILE) in _tool_calls(events)
    assert [e.kind for e in events].count(USAGE) == 1


def test_reader_refuses_a_resume_aider_did_not_restore():
    reader = AiderReader(resuming=True)
    for line in (RECORDINGS / "builder.stdout").read_text().splitlines():
        reader.feed(line)

    assert reader.finish(0, "", "").resume_refused is True


def test_reader_takes_the_verdict_from_the_recorded_chat_history():
    report, events = _read("reviewer", history="reviewer.chat.history.md")

    assert report.final_text.endswith(_verdict_block())
    assert report.final_text.startswith("Let me fix the greeting first.")
    assert any(e.kind == MESSAGE and '"verdict": "PASS"' in e.text for e in events)


def test_reader_finds_the_verdict_on_stdout_without_a_history_file():
    report, _ = _read("reviewer")

    assert report.final_text.endswith(_verdict_block())


def test_reader_on_a_recorded_auth_error():
    report, events = _read("auth_error")

    assert (report.success, report.error_type) == (False, "agent_auth")
    assert "Incorrect API key provided" in report.error
    assert "platform.openai.com" in report.error  # the wrapped lines joined


def test_reader_on_a_recorded_rate_limit():
    report, _ = _read("rate_limit", exit_code=-15)

    assert (report.success, report.error_type, report.retry_after) == (False, "rate_limited", 20)


def test_reader_forgets_an_error_a_retry_got_past():
    reader = AiderReader()
    lines = [
        "Aider v0.86.2",
        "Model: anthropic/claude-sonnet-4 with diff edit format, infinite output",
        "litellm.InternalServerError: AnthropicException - Overloaded",
        "The API provider's servers are down or overloaded.",
        "Retrying in 0.2 seconds...",
        "Done.",
        "Tokens: 12k sent, 2.5k cache write, 9.1k cache hit, 1.3k received.",
        "Cost: $0.05 message, $0.07 session.",
    ]
    for line in lines:
        reader.feed(line)
    report = reader.finish(0, "", "")

    assert (report.success, report.error_type, report.error) == (True, "", "")
    usage = report.usage
    assert (usage.input_tokens, usage.cache_write_tokens, usage.cache_read_tokens) == (
        12000,
        2500,
        9100,
    )
    assert usage.output_tokens == 1300
    assert str(usage.cost_usd) == "0.07"
    assert usage.model == "anthropic/claude-sonnet-4"


def test_last_reply_skips_aiders_own_notes():
    history = (
        "# aider chat started at 2026-01-01 10:00:00\n\n#### old\n\nold reply\n\n"
        "# aider chat started at 2026-01-01 11:00:00\n\n> Aider v0.86.2  \n\n"
        "#### Review it.  \n> hello.txt  \n\nFirst part.\n\nSecond part.\n\n"
        "> Tokens: 1 sent, 1 received.  \n"
    )

    assert last_reply(history) == "First part.\n\nSecond part."


def test_argv_of_the_three_runs(tmp_path, profile):
    def argv(role: str, session_id: str = "") -> list[str]:
        values = template_values(prompt_file="/p.md", model=MODEL)
        return KIND.argv(profile, RunContext(role, tmp_path, values, session_id=session_id))

    builder = argv("builder")
    assert builder[:2] == [profile.program, f"--model={MODEL}"]
    assert builder[-2:] == ["--message-file", "/p.md"]
    assert "--yes-always" in builder and "--restore-chat-history" not in builder
    reviewer = argv("reviewer")
    assert {"--dry-run", "--no-auto-commits"} <= set(reviewer)
    assert reviewer[reviewer.index("--chat-mode") + 1] == "ask"
    (tmp_path / history_file("builder")).write_text("#### hi\n")
    assert "--restore-chat-history" in argv("builder", history_file("builder"))
    assert "--restore-chat-history" not in argv("builder", "../../etc/passwd")


def test_a_model_is_always_named_so_aider_never_offers_a_browser_login(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.endswith("_API_KEY")] + ["AIDER_MODEL"]:
        monkeypatch.delenv(name, raising=False)
    bare = replace(BUILTIN_PROFILES["aider"], env={})
    ctx = RunContext("builder", tmp_path, template_values(prompt_file="/p.md"))

    assert "--model=gpt-4o" in KIND.argv(bare, ctx)  # no key: a quick auth error, no login
    assert "--model=sonnet" in KIND.argv(replace(bare, env={"ANTHROPIC_API_KEY": "k"}), ctx)
    assert KIND.env(replace(bare, model="openrouter/x/y"), ctx)["OPENROUTER_API_KEY"]
