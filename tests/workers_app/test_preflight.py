"""Preflight: a worker whose agent, key, git identity or sandbox is broken refuses to start.

Real programs on a real PATH: a missing one, one whose --version fails, a stand-in `claude`
script that answers --version, the real pinned CLIs; `runworker` as a real subprocess.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.waiting import wait_for
from workers_app import preflight
from workers_app.management.commands import runfactory
from workers_app.models import Worker
from workers_app.profiles import AgentProfile, get_profile

SYSTEM_PATH = "/usr/bin:/bin"


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    """A folder with a `claude` that answers --version like the real one, and one that fails."""
    folder = tmp_path / "bin"
    _script(
        folder,
        "claude",
        "import sys\nif sys.argv[1:] == ['--version']:\n    print('2.1.332 (Claude Code)')\n"
        "else:\n    sys.exit(2)",
    )
    _script(
        folder,
        "broken-claude",
        "import sys\nprint('Error: no such file libnode.so', file=sys.stderr)\nsys.exit(3)",
    )
    _script(folder, "slow-claude", "import time\ntime.sleep(30)")
    return folder


def _env(path: str, **extra: str) -> dict[str, str]:
    return {"PATH": path, "HOME": os.environ.get("HOME", "/root"), **extra}


CLAUDE = get_profile("claude")
KEY = {"ANTHROPIC_API_KEY": "sk-ant-test"}


def test_all_well_gives_no_problems(fake_bin):
    env = _env(f"{fake_bin}:{SYSTEM_PATH}", **KEY)

    assert preflight.check(CLAUDE, sandbox_mode="off", will_commit=False, env=env) == []


def test_missing_program_is_named_with_the_path_searched(fake_bin):
    problems = preflight.check(
        CLAUDE, sandbox_mode="off", will_commit=False, env=_env(SYSTEM_PATH, **KEY)
    )

    assert problems == [
        "the agent program 'claude' of profile 'claude' is not on PATH (/usr/bin:/bin); "
        "install it (bin/ensure-agent-clis) or set the profile's program to its full path"
    ]


def test_missing_program_given_as_a_path(tmp_path):
    profile = AgentProfile("mine", kind="claude", program=str(tmp_path / "nope" / "claude"))

    (problem,) = preflight.check(
        profile, sandbox_mode="off", will_commit=False, env=_env(SYSTEM_PATH, **KEY)
    )

    assert "nope/claude of profile 'mine' does not exist or is not executable" in problem


def test_version_that_fails_is_reported_with_its_exit_status_and_words(fake_bin):
    profile = AgentProfile("claude-x", kind="claude", program=str(fake_bin / "broken-claude"))

    (problem,) = preflight.check(
        profile, sandbox_mode="off", will_commit=False, env=_env(SYSTEM_PATH, **KEY)
    )

    assert problem == (
        f"`{fake_bin / 'broken-claude'} --version` failed with exit status 3: "
        "Error: no such file libnode.so"
    )


def test_version_that_hangs_is_cut_off(fake_bin, monkeypatch):
    monkeypatch.setattr(preflight, "VERSION_TIMEOUT_SECONDS", 0.5)
    profile = AgentProfile("claude-x", kind="claude", program="slow-claude")

    (problem,) = preflight.check(
        profile, sandbox_mode="off", will_commit=False, env=_env(str(fake_bin), **KEY)
    )

    assert problem == "`slow-claude --version` did not answer within 0.5s"


def test_missing_key_names_the_variables_and_the_profile_env_counts(fake_bin):
    env = _env(f"{fake_bin}:{SYSTEM_PATH}")

    (problem,) = preflight.check(CLAUDE, sandbox_mode="off", will_commit=False, env=env)
    with_env = AgentProfile(
        "c", kind="claude", program="claude", env={"CLAUDE_CODE_OAUTH_TOKEN": "t"}
    )

    assert problem == (
        "the claude agent needs an API key: set ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN or "
        "CLAUDE_CODE_OAUTH_TOKEN in the worker's environment or the profile's env"
    )
    assert preflight.check(with_env, sandbox_mode="off", will_commit=False, env=env) == []


def test_command_profiles_need_no_version_and_no_key():
    profile = AgentProfile("own", argv=("no-such-program-xyz",), kind="command")

    assert (
        preflight.check(profile, sandbox_mode="off", will_commit=False, env=_env(SYSTEM_PATH)) == []
    )


def _repo(path: Path, *config: str) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for item in config:
        key, value = item.split("=", 1)
        subprocess.run(["git", "-C", str(path), "config", key, value], check=True)
    return path


@pytest.fixture
def no_global_git(tmp_path) -> dict[str, str]:
    """An environment where git sees no global or system identity."""
    home = tmp_path / "home"
    home.mkdir()
    return {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(home)}


def test_committing_needs_git_but_no_identity_of_its_own(tmp_path, settings, no_global_git):
    """The worker commits as VIBE_GIT_AUTHOR or as itself, so only a missing git stops it."""
    settings.VIBE_GIT_AUTHOR = ""
    settings.VIBE_WORKSPACE = str(_repo(tmp_path / "repo"))
    profile = get_profile("simulated")
    env = {"PATH": SYSTEM_PATH, **no_global_git}
    assert preflight.check(profile, sandbox_mode="off", will_commit=True, env=env) == []

    no_git = tmp_path / "no-git-bin"
    no_git.mkdir()
    (no_git / "python3").symlink_to(sys.executable)
    env = {"PATH": str(no_git), **no_global_git}
    problems = preflight.check(profile, sandbox_mode="off", will_commit=True, env=env)
    assert "git is not installed, but the worker commits the agents' work" in problems


def test_bwrap_mode_asks_the_sandbox_helper_when_it_exists():
    problems = preflight.check(
        get_profile("simulated"), sandbox_mode="bwrap", will_commit=False, env=_env(SYSTEM_PATH)
    )

    try:
        sandbox = importlib.import_module("workers_app.sandbox")
    except ModuleNotFoundError:
        assert problems == []  # the sandbox module is not there yet: the check is skipped
    else:
        expected = sandbox.trial()
        assert problems == (
            []
            if expected is None
            else [f"the bubblewrap sandbox does not work (VIBE_AGENT_SANDBOX=bwrap): {expected}"]
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["claude", "codex", "gemini", "aider"])
def test_the_real_pinned_clis_pass(agent_cli_bin, name):
    env = _env(
        f"{agent_cli_bin}:{SYSTEM_PATH}",
        OPENAI_API_KEY="x",
        ANTHROPIC_API_KEY="x",
        GEMINI_API_KEY="x",
    )

    assert preflight.check(get_profile(name), sandbox_mode="off", will_commit=False, env=env) == []


# --- runworker refuses to start -----------------------------------------------------------------


def _runworker(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "manage.py"), "runworker", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _worker_env(subprocess_env: dict[str, str], path: str) -> dict[str, str]:
    env = {k: v for k, v in subprocess_env.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    env["PATH"] = path
    return env


def test_runworker_refuses_to_start_in_one_line_and_registers_nothing(subprocess_env, fake_bin):
    env = _worker_env(subprocess_env, SYSTEM_PATH)

    done = _runworker(["@pre-1", "--lane", "backend", "--agent", "claude", "--once"], env)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("CommandError: @pre-1 refused to start: the agent program 'claude'")
    assert "the claude agent needs an API key" in line
    assert line.endswith("(fix it, or pass --skip-preflight)")
    assert not Worker.objects.filter(pk="@pre-1").exists()


def test_runworker_starts_when_the_agent_answers(subprocess_env, fake_bin):
    env = {**_worker_env(subprocess_env, f"{fake_bin}:{SYSTEM_PATH}"), **KEY}

    done = _runworker(["@pre-2", "--lane", "backend", "--agent", "claude", "--once"], env)

    assert done.returncode == 0, done.stderr
    assert "@pre-2: stopped cleanly" in done.stdout
    assert Worker.objects.get(pk="@pre-2").agent_profile == "claude"


def test_skip_preflight_starts_anyway(subprocess_env):
    env = _worker_env(subprocess_env, SYSTEM_PATH)

    done = _runworker(
        ["@pre-3", "--lane", "backend", "--agent", "claude", "--once", "--skip-preflight"], env
    )

    assert done.returncode == 0, done.stderr
    assert Worker.objects.filter(pk="@pre-3").exists()


@pytest.mark.slow
def test_runfactory_says_which_worker_refused_and_why_and_does_not_restart_it(
    subprocess_env, tmp_path
):
    Worker.objects.all().delete()  # the migration's default pool
    Worker.objects.create(
        worker_id="@pre-claude", lane="backend", agent_profile="claude", managed=True
    )
    env = _worker_env(subprocess_env, SYSTEM_PATH)
    log = tmp_path / "factory.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "manage.py"), "runfactory", "--no-web"],
            cwd=REPO_ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "Not restarting it" in log.read_text(), 60, "the refusal")
        time.sleep(runfactory.RESTART_PAUSE_SECONDS + 1)  # long enough for a restart to show
        proc.send_signal(signal.SIGINT)
        assert proc.wait(40) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert "Traceback" not in output
    assert (
        "worker @pre-claude refused to start: the agent program 'claude' of profile 'claude' "
        "is not on PATH" in output
    )
    assert "the claude agent needs an API key" in output
    assert output.count("Not restarting it; fix that, then restart runfactory.") == 1
    assert output.count("CommandError: @pre-claude refused to start") == 1  # started once
    assert "restarting in" not in output
