"""Agent profiles: which program a worker runs for a task, and how it hands over the prompt.

A profile is configuration, not code: a name, an argv template (a list, never a shell string),
how the prompt is passed (on stdin or in a file), a time limit and extra environment. Built-in
profiles cover Claude Code, Codex CLI, Aider, Gemini CLI, a generic `command` and the simulated
agent; users add or override profiles in settings (`VIBE_AGENT_PROFILES`, a dict) or in a TOML
file named by `VIBE_AGENT_PROFILES_FILE`:

    [profiles.claude-opus]
    argv = ["claude", "-p", "--model", "opus"]
    prompt = "stdin"          # or "file": the prompt is written to {prompt_file}
    timeout = 1800            # seconds
    env = { CLAUDE_CODE_USE_BEDROCK = "0" }

Placeholders in argv: {prompt_file}, {task_id}, {lane}, {stage}, {workspace}, {python}, {repo}.
"""

from __future__ import annotations

import shlex
import string
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from django.conf import settings

PROMPT_MODES = ("stdin", "file")
PLACEHOLDERS = frozenset(
    {"prompt_file", "task_id", "lane", "stage", "workspace", "python", "repo", "worker_id"}
)
DEFAULT_TIMEOUT_SECONDS = 3600.0
REPO_DIR = Path(__file__).resolve().parent.parent
SIMULATED_AGENT = REPO_DIR / "workers_app" / "agents" / "simulated_agent.py"


class ProfileError(ValueError):
    """A profile is unknown or misconfigured; the message says what to fix."""


@dataclass(frozen=True)
class AgentProfile:
    name: str
    argv: tuple[str, ...]
    prompt: str = "stdin"
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def render_argv(self, values: dict[str, str]) -> list[str]:
        """Fill the placeholders of every argv item; unknown ones are a configuration error."""
        if not self.argv:
            raise ProfileError(
                f"agent profile {self.name!r} has no command; pass --agent-command "
                '"PROGRAM ARGS…" or give the profile an argv'
            )
        rendered = []
        for item in self.argv:
            try:
                rendered.append(item.format_map(values))
            except (KeyError, ValueError, IndexError) as exc:
                raise ProfileError(
                    f"agent profile {self.name!r}: argv item {item!r} is not a valid template "
                    f"({exc}); placeholders are {', '.join(sorted(PLACEHOLDERS))}"
                ) from None
        return rendered

    @property
    def uses_prompt_file(self) -> bool:
        return self.prompt == "file" or any("{prompt_file}" in item for item in self.argv)


BUILTIN_PROFILES: dict[str, AgentProfile] = {
    profile.name: profile
    for profile in (
        AgentProfile(
            "claude",
            ("claude", "-p"),
            description="Claude Code in print mode; the prompt arrives on stdin.",
        ),
        AgentProfile(
            "codex",
            ("codex", "exec", "--sandbox", "workspace-write", "-"),
            description="OpenAI Codex CLI, non-interactive; '-' reads the prompt from stdin.",
        ),
        AgentProfile(
            "aider",
            ("aider", "--yes-always", "--message-file", "{prompt_file}"),
            prompt="file",
            description="Aider, one message from a file, answering yes to its questions.",
        ),
        AgentProfile(
            "gemini",
            ("gemini", "--yolo"),
            description="Gemini CLI in headless mode; the prompt arrives on stdin.",
        ),
        AgentProfile(
            "command",
            (),
            description="Any program: give its argv with --agent-command; prompt on stdin.",
        ),
        AgentProfile(
            "simulated",
            ("{python}", str(SIMULATED_AGENT)),
            timeout=300.0,
            description="SIMULATED agent: calls no model, edits nothing, prints plausible "
            "verdicts so the factory can be watched without an API key.",
        ),
    )
}


def _profile_from_mapping(name: str, data: object, *, source: str) -> AgentProfile:
    where = f"agent profile {name!r} in {source}"
    if not isinstance(data, dict):
        raise ProfileError(f"{where} must be a table of settings")
    unknown = set(data) - {"argv", "command", "prompt", "timeout", "env", "description"}
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    base = BUILTIN_PROFILES.get(name, AgentProfile(name, ()))
    argv = data.get("argv", base.argv)
    if "command" in data:
        if not isinstance(data["command"], str):
            raise ProfileError(f"{where}: 'command' must be a string")
        argv = split_command(data["command"])
    if not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv):
        raise ProfileError(f"{where}: 'argv' must be a list of strings")
    prompt = data.get("prompt", base.prompt)
    if prompt not in PROMPT_MODES:
        raise ProfileError(f"{where}: 'prompt' must be 'stdin' or 'file', not {prompt!r}")
    timeout = data.get("timeout", base.timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ProfileError(f"{where}: 'timeout' must be a positive number of seconds")
    env = data.get("env", base.env)
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ProfileError(f"{where}: 'env' must map names to strings")
    description = data.get("description", base.description)
    profile = AgentProfile(name, tuple(argv), prompt, float(timeout), dict(env), str(description))
    _check_placeholders(profile, where)
    return profile


def _check_placeholders(profile: AgentProfile, where: str) -> None:
    for item in profile.argv:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(item) if f is not None}
        except ValueError as exc:
            raise ProfileError(f"{where}: argv item {item!r}: {exc}") from None
        unknown = names - PLACEHOLDERS
        if unknown:
            raise ProfileError(
                f"{where}: argv item {item!r} uses unknown placeholder(s) "
                f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(PLACEHOLDERS))}"
            )


def _load_file(path: str) -> dict[str, AgentProfile]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ProfileError(f"VIBE_AGENT_PROFILES_FILE names {path}, which does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"cannot read agent profiles from {path}: {exc}") from None
    table = data.get("profiles", {})
    if not isinstance(table, dict):
        raise ProfileError(f"{path}: [profiles] must be a table of profiles")
    return {name: _profile_from_mapping(name, value, source=path) for name, value in table.items()}


def all_profiles() -> dict[str, AgentProfile]:
    """Built-ins, overridden by settings.VIBE_AGENT_PROFILES, overridden by the TOML file."""
    profiles = dict(BUILTIN_PROFILES)
    from_settings = getattr(settings, "VIBE_AGENT_PROFILES", None) or {}
    for name, value in from_settings.items():
        profiles[name] = _profile_from_mapping(name, value, source="settings")
    path = getattr(settings, "VIBE_AGENT_PROFILES_FILE", "")
    if path:
        profiles.update(_load_file(path))
    return profiles


def get_profile(name: str) -> AgentProfile:
    """The named profile, or a ProfileError that lists the names there are."""
    profiles = all_profiles()
    try:
        return profiles[name]
    except KeyError:
        raise ProfileError(
            f"unknown agent profile {name!r}; choose one of {', '.join(sorted(profiles))}"
        ) from None


def runnable_profile(name: str | None) -> str:
    """`name` if it can run on its own; "" for `command` (needs argv), unknown or broken ones."""
    if not name:
        return ""
    try:
        return name if get_profile(name).argv else ""
    except ProfileError:
        return ""


def split_command(command: str) -> tuple[str, ...]:
    """Split a command line like a shell would, without ever running one."""
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise ProfileError(f"cannot split the agent command {command!r}: {exc}") from None
    if not argv:
        raise ProfileError("the agent command is empty")
    return argv


def command_profile(command: str, *, base: AgentProfile | None = None) -> AgentProfile:
    """A profile that runs `command` (from --agent-command), keeping the base's other settings."""
    base = base or BUILTIN_PROFILES["command"]
    profile = replace(base, argv=split_command(command))
    _check_placeholders(profile, f"--agent-command {command!r}")
    return profile


def template_values(**values: object) -> dict[str, str]:
    """Values for the argv placeholders, with the interpreter and repository filled in."""
    out = {name: "" for name in PLACEHOLDERS}
    out.update(python=sys.executable, repo=str(REPO_DIR))
    out.update({k: "" if v is None else str(v) for k, v in values.items()})
    return out
