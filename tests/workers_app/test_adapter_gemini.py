"""The gemini adapter against the real Gemini CLI and a stand-in Gemini API.

Each slow test runs the pinned `gemini` with the adapter's argv, env and prepared settings in a
fresh git repository (HOME a temporary folder), feeds its output through the adapter's reader
and checks the report and the repository. The fast tests read output recorded from those runs
(tests/agents/recordings/gemini/; `GEMINI_RECORD=1` rewrites them).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.standins import gemini_api
from tests.standins.gemini_api import GeminiStandIn
from workers_app.adapters.base import (
    BUILDER,
    MESSAGE,
    REVIEWER,
    TOOL_CALL,
    TOOL_RESULT,
    USAGE,
    Event,
    Report,
    RunContext,
)
from workers_app.adapters.gemini import GeminiKind, GeminiReader, settings_path
from workers_app.profiles import AgentProfile, template_values

RECORDINGS = Path(__file__).resolve().parent.parent / "agents" / "recordings" / "gemini"
MODEL = "gemini-2.5-flash"
KIND = GeminiKind()


@dataclass
class Finished:
    report: Report
    events: list[Event] = field(default_factory=list)
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.name", "Builder")
    _git(path, "config", "user.email", "builder@example.com")
    (path / "README").write_text("A repository for the gemini adapter tests.\n")
    _git(path, "add", "README")
    _git(path, "commit", "-q", "-m", "Initial commit")
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def _profile(model: str = MODEL) -> AgentProfile:
    return AgentProfile(
        "gemini", kind="gemini", program="gemini", model=model, env={"GEMINI_API_KEY": "k-test"}
    )


def run_gemini(
    cli_bin: Path,
    api: GeminiStandIn,
    repo: Path,
    home: Path,
    *,
    role: str = BUILDER,
    session_id: str = "",
    prompt: str = "Add a hello file and commit it.",
    profile: AgentProfile | None = None,
    record: str = "",
    settings: dict | None = None,
) -> Finished:
    """One run as the worker would do it: prepare, argv, env, prompt on stdin, the reader."""
    profile = profile or _profile()
    values = template_values(workspace=repo, model=profile.model, max_turns=profile.max_turns)
    ctx = RunContext(role=role, workspace=repo, values=values, session_id=session_id, home=home)
    KIND.prepare(profile, ctx)
    if settings:
        path = settings_path(ctx)
        path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))
    argv = KIND.argv(profile, ctx)
    argv[0] = str(cli_bin / argv[0])
    env = {
        "PATH": f"{cli_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **profile.env,
        "GOOGLE_GEMINI_BASE_URL": api.url,
        **KIND.env(profile, ctx),
    }
    done = subprocess.run(
        argv, input=prompt, cwd=repo, env=env, capture_output=True, text=True, timeout=60
    )
    reader = KIND.reader(profile, ctx)
    events = [e for line in done.stdout.splitlines() for e in reader.feed(line)]
    events += [e for line in done.stderr.splitlines() for e in reader.feed_stderr(line)]
    report = reader.finish(done.returncode, done.stdout, done.stderr)
    if record and os.environ.get("GEMINI_RECORD"):
        RECORDINGS.mkdir(parents=True, exist_ok=True)
        run_dir = str(repo.parent)
        (RECORDINGS / f"{record}.jsonl").write_text(done.stdout.replace(run_dir, "/tmp/run"))
        (RECORDINGS / f"{record}.stderr").write_text(
            f"exit {done.returncode}\n" + done.stderr.replace(run_dir, "/tmp/run")
        )
    return Finished(report, events, done.returncode, done.stdout, done.stderr)


# -- argv, env, settings ---------------------------------------------------------------------


def _ctx(
    tmp_path: Path, role: str = BUILDER, session_id: str = "", model: str = MODEL
) -> RunContext:
    values = template_values(workspace=tmp_path, model=model)
    return RunContext(role=role, workspace=tmp_path, values=values, session_id=session_id)


def test_builder_argv_trusts_the_folder_and_approves_every_tool(tmp_path):
    argv = KIND.argv(_profile(), _ctx(tmp_path))
    assert argv == [
        "gemini",
        "--skip-trust",
        "--output-format",
        "stream-json",
        "--yolo",
        f"--model={MODEL}",
    ]


def test_reviewer_argv_is_plan_mode_and_resume_names_the_session(tmp_path):
    reviewer = KIND.argv(_profile(), _ctx(tmp_path, REVIEWER))
    assert "--yolo" not in reviewer
    assert reviewer[reviewer.index("--approval-mode") + 1] == "plan"
    resumed = KIND.argv(_profile(model=""), _ctx(tmp_path, session_id="abc-123", model=""))
    assert resumed[-2:] == ["--resume", "abc-123"]
    assert not any(item.startswith("--model") for item in resumed)


def test_settings_live_in_the_git_folder_of_a_worktree(repo, tmp_path):
    worktree = tmp_path / "wt"
    _git(repo, "worktree", "add", "-q", "-b", "task-1", str(worktree))
    ctx = _ctx(worktree)
    KIND.prepare(_profile(), ctx)
    path = settings_path(ctx)
    assert path.is_relative_to(repo / ".git" / "worktrees")
    assert path == Path(KIND.env(_profile(), ctx)["GEMINI_CLI_HOME"]) / ".gemini" / "settings.json"
    settings = json.loads(path.read_text())
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["telemetry"] == {"enabled": False}
    assert settings["model"]["maxSessionTurns"] == _profile().max_turns
    assert _git(worktree, "status", "--porcelain") == ""


def test_settings_go_to_the_agents_home_when_there_is_one(repo, home):
    ctx = RunContext(role=REVIEWER, workspace=repo, values=template_values(), home=home)
    KIND.prepare(_profile(), ctx)
    assert KIND.env(_profile(), ctx)["GEMINI_CLI_HOME"] == str(home)
    assert json.loads((home / ".gemini" / "settings.json").read_text())["privacy"] == {
        "usageStatisticsEnabled": False
    }


# -- the real CLI ----------------------------------------------------------------------------


@pytest.mark.slow
def test_builder_writes_and_commits_the_file(agent_cli_bin, repo, home):
    with GeminiStandIn("builder") as api:
        done = run_gemini(agent_cli_bin, api, repo, home, record="builder")
    report = done.report
    assert report.success is True, (done.exit_code, done.stderr[-2000:])
    assert report.error_type == ""
    assert (repo / "hello.txt").read_text() == gemini_api.HELLO_LINE + "\n"
    assert "Add hello.txt" in _git(repo, "log", "--oneline")
    assert _git(repo, "status", "--porcelain") == ""
    assert len(report.session_id) == 36  # a UUID
    assert report.final_text == gemini_api.FINAL_BUILDER_TEXT
    usage = report.usage
    assert usage.model == MODEL
    assert usage.input_tokens == 3 * (gemini_api.PROMPT_TOKENS - gemini_api.CACHED_TOKENS)
    assert usage.cache_read_tokens == 3 * gemini_api.CACHED_TOKENS
    assert usage.output_tokens and usage.output_tokens > 0
    assert usage.turns == 3
    assert usage.cost_usd is None  # the CLI reports no cost
    calls = [e for e in done.events if e.kind == TOOL_CALL]
    assert [c.data["name"] for c in calls] == ["write_file", "run_shell_command"]
    assert calls[1].text.startswith("git add hello.txt && git commit")
    assert [e.kind for e in done.events].count(TOOL_RESULT) == 2
    assert any(e.kind == USAGE for e in done.events)


@pytest.mark.slow
def test_builder_without_a_model_goes_through_the_router(agent_cli_bin, repo, home):
    with GeminiStandIn("builder") as api:
        done = run_gemini(agent_cli_bin, api, repo, home, profile=_profile(model=""))
    assert done.report.success is True, done.stderr[-2000:]
    assert (repo / "hello.txt").exists()
    assert done.report.usage.model.startswith("gemini-")


@pytest.mark.slow
def test_reviewer_cannot_write_and_ends_with_a_verdict(agent_cli_bin, repo, home):
    with GeminiStandIn("reviewer") as api:
        api.reviewer_attempts.append(("run_shell_command", {"command": "touch shell-notes.txt"}))
        done = run_gemini(
            agent_cli_bin, api, repo, home, role=REVIEWER, prompt="Review.", record="reviewer"
        )
        declared = {
            d["name"]
            for t in api.conversations[0].get("tools") or []
            for d in t.get("functionDeclarations") or []
        }
    report = done.report
    assert report.success is True, done.stderr[-2000:]
    assert not (repo / gemini_api.REVIEW_NOTES).exists()
    assert not (repo / "shell-notes.txt").exists()
    assert _git(repo, "status", "--porcelain") == ""
    assert "run_shell_command" not in declared
    assert report.final_text.rstrip().endswith("```")
    block = report.final_text.rsplit("```json", 1)[1].rsplit("```", 1)[0]
    assert json.loads(block) == gemini_api.VERDICT
    results = [e for e in done.events if e.kind == TOOL_RESULT]
    assert all(r.data["is_error"] for r in results)
    assert "write_file" in report.permission_denials


@pytest.mark.slow
def test_resume_sends_the_earlier_conversation(agent_cli_bin, repo, home):
    with GeminiStandIn("builder") as api:
        first = run_gemini(agent_cli_bin, api, repo, home)
        assert first.report.success is True, first.stderr[-2000:]
        before = len(api.conversations)
        second = run_gemini(
            agent_cli_bin,
            api,
            repo,
            home,
            session_id=first.report.session_id,
            prompt="Now add a second hello file.",
            record="resume",
        )
        resumed = api.conversations[before]
    assert second.report.success is True, second.stderr[-2000:]
    assert second.report.session_id == first.report.session_id
    sent = gemini_api.conversation_text(resumed)
    assert "Add a hello file and commit it." in sent
    assert gemini_api.FINAL_BUILDER_TEXT in sent
    assert "Now add a second hello file." in sent
    assert (repo / "hello-2.txt").exists()
    assert "Add hello-2.txt" in _git(repo, "log", "--oneline")


@pytest.mark.slow
def test_resume_of_an_unknown_session_is_refused(agent_cli_bin, repo, home):
    with GeminiStandIn("builder") as api:
        done = run_gemini(
            agent_cli_bin,
            api,
            repo,
            home,
            session_id="3b4d5c52-0000-4000-8000-000000000000",
            record="resume-refused",
        )
        assert api.conversations == []
    assert done.exit_code == 42
    assert done.report.resume_refused is True
    assert done.report.success is False


@pytest.mark.slow
def test_bad_key_is_agent_auth(agent_cli_bin, repo, home):
    with GeminiStandIn("builder") as api:
        api.fail_always(401, gemini_api.AUTH_ERROR)
        done = run_gemini(agent_cli_bin, api, repo, home, record="auth-error")
    assert done.report.error_type == "agent_auth"
    assert done.report.success is False
    assert "API key not valid" in done.report.error
    assert not (repo / "hello.txt").exists()


@pytest.mark.slow
def test_quota_is_rate_limited_with_the_suggested_delay(agent_cli_bin, repo, home):
    # One attempt: the CLI itself would otherwise retry (10 attempts) after each delay.
    with GeminiStandIn("builder") as api:
        api.fail_always(429, gemini_api.RATE_LIMIT_ERROR, **{"Retry-After": "17"})
        done = run_gemini(
            agent_cli_bin,
            api,
            repo,
            home,
            record="rate-limited",
            settings={"general": {"maxAttempts": 1}},
        )
    assert done.report.error_type == "rate_limited", done.report.error
    assert done.report.retry_after == 17
    assert done.report.success is False


# -- the reader on recorded output -----------------------------------------------------------


def _replay(name: str, *, resuming: bool = False) -> tuple[Report, list[Event]]:
    reader = GeminiReader(resuming=resuming)
    stdout = (RECORDINGS / f"{name}.jsonl").read_text()
    code_line, _, stderr = (RECORDINGS / f"{name}.stderr").read_text().partition("\n")
    events = [e for line in stdout.splitlines() for e in reader.feed(line)]
    return reader.finish(int(code_line.split()[1]), stdout, stderr), events


def test_recorded_builder_run_reads_as_success():
    report, events = _replay("builder")
    assert report.success is True and report.error_type == ""
    assert report.session_id
    assert report.final_text == gemini_api.FINAL_BUILDER_TEXT
    assert report.usage.turns == 3
    assert report.usage.input_tokens and report.usage.cache_read_tokens
    kinds = [e.kind for e in events]
    assert kinds.count(TOOL_CALL) == 2 and kinds.count(TOOL_RESULT) == 2
    assert kinds[-2:] == [MESSAGE, USAGE]


def test_recorded_reviewer_run_keeps_the_verdict_and_the_denial():
    report, _ = _replay("reviewer")
    assert "```json" in report.final_text
    assert report.permission_denials == ["write_file", "run_shell_command"]


def test_recorded_failures_read_as_their_types():
    auth, _ = _replay("auth-error")
    assert (auth.error_type, auth.success) == ("agent_auth", False)
    rate, _ = _replay("rate-limited")
    assert (rate.error_type, rate.retry_after) == ("rate_limited", 17)
    refused, _ = _replay("resume-refused", resuming=True)
    assert refused.resume_refused is True


def test_delta_chunks_make_one_message():
    reader = GeminiReader()
    lines = [
        {"type": "message", "role": "assistant", "content": "Hel", "delta": True},
        {"type": "message", "role": "assistant", "content": "lo.", "delta": True},
        {"type": "result", "status": "success", "stats": {"input_tokens": 10, "cached": 4}},
    ]
    events = [e for obj in lines for e in reader.feed(json.dumps(obj))]
    assert [(e.kind, e.text) for e in events[:1]] == [(MESSAGE, "Hello.")]
    report = reader.finish(0, "", "")
    assert report.final_text == "Hello."
    assert (report.usage.input_tokens, report.usage.cache_read_tokens) == (6, 4)


def test_turn_limit_result_is_max_turns():
    reader = GeminiReader()
    result = {
        "type": "result",
        "status": "error",
        "error": {"type": "FatalTurnLimitedError", "message": "Reached max session turns"},
        "stats": {},
    }
    reader.feed(json.dumps(result))
    assert reader.finish(53, "", "").error_type == "max_turns"
