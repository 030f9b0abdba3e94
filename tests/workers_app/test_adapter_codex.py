"""The codex adapter against the real Codex CLI (`codex exec --json`) and a stand-in model API.

Each slow test runs the pinned `codex` in a real git worktree (or a scratch folder) with the
adapter's argv, feeds its output through the adapter's reader and checks the report and the
files. The fast tests read output recorded from those runs (tests/agents/recordings/codex/).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.standins.openai_responses import (
    AUTH_ERROR,
    FINAL_BUILDER_TEXT,
    HELLO_FILE,
    HELLO_TEXT,
    RATE_LIMIT_ERROR,
    REVIEW_FILE,
    OpenAIResponsesStandIn,
)
from workers_app.adapters.base import (
    ERROR,
    MESSAGE,
    TOOL_CALL,
    TOOL_RESULT,
    Event,
    Report,
    RunContext,
)
from workers_app.adapters.codex import CodexKind, CodexReader
from workers_app.profiles import AgentProfile, template_values

RECORDINGS = Path(__file__).resolve().parent.parent / "agents" / "recordings" / "codex"
KIND = CodexKind()


@dataclass
class Run:
    argv: list[str]
    exit_code: int
    events: list[Event]
    report: Report
    stdout: str
    stderr: str


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A task's worktree: a branch of a repository with one commit, as the worker makes it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "Test Person")
    _git(repo, "config", "user.email", "test@example.com")
    (repo / "README.md").write_text("# A project\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    tree = tmp_path / "worktrees" / "task-1"
    _git(repo, "worktree", "add", "-q", "-b", "task-1", str(tree))
    return tree


@pytest.fixture
def agent_env(tmp_path: Path, agent_cli_bin: Path) -> dict[str, str]:
    home = tmp_path / "home"
    scratch_tmp = tmp_path / "tmp"
    home.mkdir()
    scratch_tmp.mkdir()
    return {
        "PATH": f"{agent_cli_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        # Codex refuses to make its sandbox helper under the temporary folder; HOME (and so
        # CODEX_HOME, ~/.codex) lies under /tmp here, so TMPDIR must point elsewhere.
        "TMPDIR": str(scratch_tmp),
        "LANG": "C.UTF-8",
        "OPENAI_API_KEY": "sk-test",
    }


def _profile(api: OpenAIResponsesStandIn) -> AgentProfile:
    return AgentProfile("codex", kind="codex", program="codex", extra_args=tuple(api.codex_args()))


def _ctx(
    role: str, workspace: Path, *, session_id: str = "", sandboxed: bool = False
) -> RunContext:
    values = template_values(workspace=workspace, task_id="1", session_id=session_id)
    return RunContext(
        role=role,
        workspace=workspace,
        values=values,
        session_id=session_id,
        sandboxed=sandboxed,
        as_root=os.geteuid() == 0,
    )


def _run(
    profile: AgentProfile, ctx: RunContext, env: dict[str, str], prompt: str = "Create hello.txt."
) -> Run:
    KIND.prepare(profile, ctx)
    argv = KIND.argv(profile, ctx)
    done = subprocess.run(
        argv,
        input=prompt,
        capture_output=True,
        text=True,
        errors="replace",
        cwd=ctx.workspace,
        env={**env, **KIND.env(profile, ctx)},
        timeout=60,
        check=False,
    )
    reader = KIND.reader(profile, ctx)
    events: list[Event] = []
    for line in done.stdout.splitlines():
        events += reader.feed(line)
    for line in done.stderr.splitlines():
        events += reader.feed_stderr(line)
    report = reader.finish(done.returncode, done.stdout[-8000:], done.stderr[-8000:])
    return Run(argv, done.returncode, events, report, done.stdout, done.stderr)


def _turn_metadata(api: OpenAIResponsesStandIn) -> dict:
    return json.loads(api.model_requests[0].headers["x-codex-turn-metadata"])


def _tool_outputs(api: OpenAIResponsesStandIn) -> list[str]:
    last = api.model_requests[-1].json["input"]
    return [str(item["output"]) for item in last if item.get("type") == "function_call_output"]


@pytest.mark.slow
def test_builder_writes_the_file_and_reports_session_and_tokens(worktree, agent_env):
    with OpenAIResponsesStandIn("builder") as api:
        run = _run(_profile(api), _ctx("builder", worktree), agent_env)

    assert run.exit_code == 0, run.stderr
    assert "PATH aliases" not in run.stderr  # its sandbox helper is there (see agent_env)
    assert (worktree / HELLO_FILE).read_text() == HELLO_TEXT + "\n"
    assert _git(worktree, "status", "--porcelain") == f"?? {HELLO_FILE}\n"  # the worker commits
    assert run.report.success is True
    assert run.report.error_type == ""
    assert run.report.final_text == FINAL_BUILDER_TEXT
    assert len(run.report.session_id) == 36
    usage = run.report.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (3600, 120, 600)
    assert usage.model == "gpt-standin" and usage.turns == 1
    assert usage.cost_usd is None  # Codex reports none
    calls = [e for e in run.events if e.kind == TOOL_CALL]
    assert [c.text for c in calls] == [
        f"printf '%s\\n' '{HELLO_TEXT}' > {HELLO_FILE}",
        f"cat {HELLO_FILE}",
    ]
    results = [e for e in run.events if e.kind == TOOL_RESULT]
    assert results[-1].text == HELLO_TEXT + "\n" and not results[-1].data["is_error"]
    assert [e.text for e in run.events if e.kind == MESSAGE] == [FINAL_BUILDER_TEXT]
    assert len(api.model_requests) == 3
    assert {r.path for r in api.requests} == {"/v1/responses"}  # nothing else was asked
    metadata = _turn_metadata(api)
    assert metadata["sandbox_mode"] == "workspace-write"
    assert metadata["analytics_enabled"] is False


@pytest.mark.slow
def test_builder_works_in_a_scratch_folder_without_git(tmp_path, agent_env):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with OpenAIResponsesStandIn("builder") as api:
        run = _run(_profile(api), _ctx("builder", scratch), agent_env)

    assert run.exit_code == 0, run.stderr
    assert (scratch / HELLO_FILE).read_text() == HELLO_TEXT + "\n"
    assert run.report.success is True


@pytest.mark.slow
def test_builder_in_the_factory_sandbox_runs_without_codex_sandbox(worktree, agent_env):
    with OpenAIResponsesStandIn("builder") as api:
        ctx = _ctx("builder", worktree, sandboxed=True)
        run = _run(_profile(api), ctx, agent_env)

    assert run.argv[-3:] == ["--sandbox", "danger-full-access", "-"]
    assert run.report.success is True
    assert (worktree / HELLO_FILE).exists()
    assert _turn_metadata(api)["sandbox_mode"] == "danger-full-access"


@pytest.mark.slow
def test_reviewer_cannot_write_and_returns_its_verdict(worktree, agent_env):
    with OpenAIResponsesStandIn("reviewer") as api:
        run = _run(_profile(api), _ctx("reviewer", worktree), agent_env, "Review the change.")

    assert run.argv[-3:] == ["--sandbox", "read-only", "-"]
    assert not (worktree / REVIEW_FILE).exists()
    assert _git(worktree, "status", "--porcelain") == ""
    assert "Read-only file system" in _tool_outputs(api)[0]  # Codex's sandbox refused it
    assert run.report.success is True
    assert run.report.final_text.rstrip().endswith("```")
    verdict = run.report.final_text.split("```json", 1)[1].rsplit("```", 1)[0]
    assert json.loads(verdict)["verdict"] == "PASS"


@pytest.mark.slow
def test_resume_sends_the_earlier_conversation(worktree, agent_env):
    with OpenAIResponsesStandIn("builder") as api:
        profile = _profile(api)
        first = _run(profile, _ctx("builder", worktree), agent_env, "Create hello.txt.")
        (worktree / HELLO_FILE).unlink()
        earlier = len(api.model_requests)
        ctx = _ctx("builder", worktree, session_id=first.report.session_id)
        second = _run(profile, ctx, agent_env, "The reviewer asked: write it again.")

    assert second.argv[:3] == ["codex", "exec", "resume"]
    assert second.argv[-2:] == [first.report.session_id, "-"]
    assert second.exit_code == 0, second.stderr
    assert second.report.session_id == first.report.session_id
    assert second.report.success is True and not second.report.resume_refused
    assert (worktree / HELLO_FILE).exists()
    resumed = api.model_requests[earlier]
    assert resumed.headers["session-id"] == first.report.session_id
    texts = [
        part.get("text", "")
        for item in resumed.json["input"]
        if item.get("type") == "message"
        for part in item.get("content") or []
    ]
    assert "Create hello.txt." in texts and "The reviewer asked: write it again." in texts
    assert FINAL_BUILDER_TEXT in texts  # its own earlier answer came back
    # Codex reports the session's running total: the resumed run includes the first one.
    assert second.report.usage.input_tokens == 2 * first.report.usage.input_tokens


@pytest.mark.slow
def test_resume_of_a_session_codex_does_not_have_is_refused(worktree, agent_env):
    missing = "01a23377-0000-7000-8000-000000000000"
    with OpenAIResponsesStandIn("builder") as api:
        run = _run(_profile(api), _ctx("builder", worktree, session_id=missing), agent_env)

    assert run.exit_code != 0
    assert run.report.resume_refused is True
    assert run.report.success is False
    assert "no rollout found" in run.report.error
    assert api.model_requests == []


@pytest.mark.slow
def test_bad_key_is_agent_auth(worktree, agent_env):
    with OpenAIResponsesStandIn("builder") as api:
        api.fail_always(401, AUTH_ERROR)
        run = _run(_profile(api), _ctx("builder", worktree), agent_env)

    assert run.exit_code == 1
    assert run.report.success is False
    assert run.report.error_type == "agent_auth"
    assert "401 Unauthorized" in run.report.error
    assert any(e.kind == ERROR for e in run.events)


@pytest.mark.slow
def test_rate_limit_is_rate_limited(worktree, agent_env):
    with OpenAIResponsesStandIn("builder") as api:
        api.fail_always(429, RATE_LIMIT_ERROR, **{"Retry-After": "7"})
        run = _run(_profile(api), _ctx("builder", worktree), agent_env)

    assert run.exit_code == 1
    assert run.report.success is False
    assert run.report.error_type == "rate_limited"
    # Codex keeps neither the body nor Retry-After: "exceeded retry limit, last status: 429 …".
    assert run.report.retry_after is None
    assert not (worktree / HELLO_FILE).exists()


# The reader on recorded output ---------------------------------------------------------------


def _read(name: str, *, exit_code: int = 0, resume_id: str = "") -> tuple[list[Event], Report]:
    reader = CodexReader(model="gpt-standin", resume_id=resume_id)
    events: list[Event] = []
    stdout_path = RECORDINGS / f"{name}.jsonl"
    stderr_path = RECORDINGS / f"{name}.stderr"
    stdout = stdout_path.read_text() if stdout_path.exists() else ""
    stderr = stderr_path.read_text() if stderr_path.exists() else ""
    for line in stdout.splitlines():
        events += reader.feed(line)
    for line in stderr.splitlines():
        events += reader.feed_stderr(line)
    return events, reader.finish(exit_code, stdout, stderr)


def test_reader_on_a_builder_run():
    events, report = _read("builder")
    assert report.success is True and report.error_type == ""
    assert report.final_text == FINAL_BUILDER_TEXT
    assert report.session_id == "01a2337a-19ce-7841-bbda-3ccb244447f6"
    assert (report.usage.input_tokens, report.usage.output_tokens) == (3600, 120)
    assert report.usage.cache_read_tokens == 600 and report.usage.cache_write_tokens == 0
    assert [e.data["name"] for e in events if e.kind == TOOL_CALL] == ["shell", "shell"]
    # The "model metadata not found" item is a warning, not a failure.
    assert not [e for e in events if e.kind == ERROR]


def test_reader_on_a_failed_command_marks_the_result_an_error():
    events, report = _read("builder_command_failed")
    results = [e for e in events if e.kind == TOOL_RESULT]
    assert results and all(e.data["is_error"] for e in results)
    assert "Is a directory" in results[0].text
    assert report.success is True  # the agent finished its turn; the worker checks the tree


def test_reader_on_a_reviewer_run_keeps_the_verdict():
    _, report = _read("reviewer")
    assert report.success is True
    assert '"verdict": "PASS"' in report.final_text


def test_reader_on_a_bad_key():
    events, report = _read("auth_401", exit_code=1)
    assert report.success is False and report.error_type == "agent_auth"
    assert [e.data["type"] for e in events if e.kind == ERROR] == ["error", "turn.failed"]


def test_reader_on_a_rate_limit():
    _, report = _read("rate_429", exit_code=1)
    assert report.success is False and report.error_type == "rate_limited"


def test_reader_on_an_exhausted_quota_is_agent_auth():
    _, report = _read("quota_429", exit_code=1)
    assert report.error_type == "agent_auth"
    assert report.error == "Quota exceeded. Check your plan and billing details."


def test_reader_on_a_missing_session_refuses_the_resume():
    _, report = _read(
        "resume_missing", exit_code=1, resume_id="01a23377-0000-7000-8000-000000000000"
    )
    assert report.resume_refused is True and report.success is False


def test_reader_reads_a_retry_delay_when_the_message_gives_one():
    reader = CodexReader()
    message = "rate limit reached: Please try again in 1.5s."
    reader.feed(json.dumps({"type": "turn.failed", "error": {"message": message}}))
    report = reader.finish(1, "", "")
    assert (report.error_type, report.retry_after) == ("rate_limited", 1.5)


def test_reader_ignores_reconnect_notes():
    reader = CodexReader()
    reader.feed(json.dumps({"type": "error", "message": "Reconnecting... 1/5 (stream closed)"}))
    reader.feed(json.dumps({"type": "turn.completed", "usage": {"input_tokens": 5}}))
    assert reader.finish(0, "", "").success is True


def test_profile_options_cannot_loosen_the_reviewer_sandbox(tmp_path):
    profile = AgentProfile(
        "codex", kind="codex", extra_args=("-c", 'sandbox_mode="danger-full-access"')
    )
    fresh = KIND.argv(profile, _ctx("reviewer", tmp_path))
    assert fresh[-3:] == ["--sandbox", "read-only", "-"]  # the flag beats `-c`
    resumed = KIND.argv(profile, _ctx("reviewer", tmp_path, session_id="abc"))
    assert resumed[-4:] == ["-c", 'sandbox_mode="read-only"', "abc", "-"]  # last `-c` wins


def test_reader_on_a_resumed_run_reports_the_session_running_total():
    _, report = _read("resume", resume_id="01a2337a-19ce-7841-bbda-3ccb244447f6")
    assert report.session_id == "01a2337a-19ce-7841-bbda-3ccb244447f6"
    assert report.usage.input_tokens == 7200  # 3600 of the first run, 3600 of this one
    assert report.success is True and not report.resume_refused
