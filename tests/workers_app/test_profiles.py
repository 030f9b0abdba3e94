"""Agent profiles are configuration: built-ins, a user's TOML file, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers_app.profiles import (
    BUILTIN_PROFILES,
    ProfileError,
    command_profile,
    get_profile,
    template_values,
)


def test_builtin_profiles_cover_the_agents_the_issue_names():
    for name in ("claude", "codex", "gemini", "aider"):
        profile = BUILTIN_PROFILES[name]
        assert (profile.kind, profile.program) == (name, name)
        assert profile.runnable
    assert BUILTIN_PROFILES["aider"].uses_prompt_file
    assert BUILTIN_PROFILES["command"].argv == ()
    assert not BUILTIN_PROFILES["command"].runnable
    assert "SIMULATED" in BUILTIN_PROFILES["simulated"].description


def test_simulated_profile_renders_to_the_repo_script():
    argv = BUILTIN_PROFILES["simulated"].render_argv(template_values())
    assert argv[1].endswith("workers_app/agents/simulated_agent.py")


def test_user_profile_from_toml_file_adds_and_overrides(tmp_path, settings):
    path = tmp_path / "agents.toml"
    path.write_text(
        """
[profiles.mine]
command = "my-agent --fast '{prompt_file}'"
prompt = "file"
timeout = 90
env = { MY_KEY = "1" }

[profiles.claude]
argv = ["claude", "-p", "--model", "opus"]
"""
    )
    settings.VIBE_AGENT_PROFILES_FILE = str(path)
    mine = get_profile("mine")
    assert mine.argv == ("my-agent", "--fast", "{prompt_file}")
    assert mine.prompt == "file" and mine.timeout == 90 and mine.env == {"MY_KEY": "1"}
    # A whole argv of one's own is run exactly, as a plain command.
    claude = get_profile("claude")
    assert (claude.argv, claude.kind) == (("claude", "-p", "--model", "opus"), "command")
    assert get_profile("aider").kind == "aider"  # built-ins stay


def test_a_profile_overrides_pieces_of_its_kind(tmp_path, settings):
    path = tmp_path / "agents.toml"
    path.write_text(
        """
[profiles.claude-opus]
kind = "claude"
model = "opus"
max_turns = 12
extra_args = ["--append-system-prompt", "Be brief.", "--fallback-model={model}"]
"""
    )
    settings.VIBE_AGENT_PROFILES_FILE = str(path)
    profile = get_profile("claude-opus")
    assert (profile.kind, profile.program, profile.model, profile.max_turns) == (
        "claude",
        "",
        "opus",
        12,
    )
    # An item whose placeholders are all empty is left out.
    assert profile.render(
        ["--model={model}", "--resume={session_id}"], template_values(model="opus")
    ) == ["--model=opus"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[profiles.x]\nargv = 'claude'", "'argv' must be a list of strings"),
        ("[profiles.x]\nargv = ['a']\nprompt = 'pipe'", "'prompt' must be 'stdin' or 'file'"),
        ("[profiles.x]\nargv = ['a']\ntimeout = -1", "'timeout' must be a positive number"),
        ("[profiles.x]\nargv = ['a', '{secret}']", "unknown placeholder(s) secret"),
        ("[profiles.x]\nargvv = ['a']", "unknown key(s) argvv"),
        ("[profiles.x]\nkind = 'cursor'", "'kind' must be one of"),
        ("[profiles.x]\nkind = 'claude'\nmax_turns = 0", "'max_turns' must be a whole number"),
        ("[profiles.x]\nargv = ['a']\noutput = 'xml'", "'output' must be 'text' or 'stream-json'"),
        ("[profiles.x\n", "cannot read agent profiles"),
    ],
)
def test_bad_profile_file_is_refused_with_a_clear_message(tmp_path, settings, body, message):
    path = tmp_path / "agents.toml"
    path.write_text(body)
    settings.VIBE_AGENT_PROFILES_FILE = str(path)
    with pytest.raises(ProfileError) as excinfo:
        get_profile("x")
    assert message in str(excinfo.value)


def test_missing_profile_file_is_named(settings, tmp_path):
    settings.VIBE_AGENT_PROFILES_FILE = str(tmp_path / "nope.toml")
    with pytest.raises(ProfileError, match="does not exist"):
        get_profile("claude")


def test_unknown_profile_lists_the_choices():
    with pytest.raises(ProfileError, match="choose one of aider, claude"):
        get_profile("gpt-9")


def test_agent_command_is_split_like_a_shell_but_never_run_by_one():
    profile = command_profile("python 'my agent.py' --flag \"a b\"; rm -rf /")
    assert profile.argv == ("python", "my agent.py", "--flag", "a b;", "rm", "-rf", "/")
    with pytest.raises(ProfileError, match="cannot split"):
        command_profile("python 'unclosed")
    with pytest.raises(ProfileError, match="empty"):
        command_profile("   ")


def test_command_profile_without_argv_says_how_to_fix_it():
    with pytest.raises(ProfileError, match="--agent-command"):
        BUILTIN_PROFILES["command"].render_argv(template_values())


def test_profiles_from_the_environment_reach_settings_and_the_profile_table(tmp_path, settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VIBE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="vibe_project.settings",
        VIBE_VAR_DIR=str(tmp_path),
        VIBE_AGENT_PROFILES='{"mine": {"command": "my-agent", "timeout": 90}}',
    )
    code = "from django.conf import settings; print(settings.VIBE_AGENT_PROFILES)"
    shown = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout.strip() == "{'mine': {'command': 'my-agent', 'timeout': 90}}"
    settings.VIBE_AGENT_PROFILES = {"mine": {"command": "my-agent", "timeout": 90}}
    assert get_profile("mine").timeout == 90
