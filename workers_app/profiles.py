"""Agent profiles: which agent a worker runs, configured as data.

A profile names its `kind` (claude, codex, gemini, aider, command, simulated); the kind's
adapter (`workers_app.adapters`) knows the builder, reviewer and resume command lines and how to
read the agent's output. A profile overrides pieces of that without code, in settings
(`VIBE_AGENT_PROFILES`, a dict) or in a TOML file named by `VIBE_AGENT_PROFILES_FILE`:

    [profiles.claude-opus]
    kind = "claude"
    model = "opus"
    max_turns = 60
    extra_args = ["--append-system-prompt", "Prefer small commits."]
    timeout = 1800            # seconds
    env = { DISABLE_TELEMETRY = "1" }

    [profiles.my-wrapper]
    kind = "command"
    argv = ["python", "/opt/agents/run.py", "--task", "{task_id}"]
    output = "stream-json"    # or "text": how the factory reads what it prints

`builder`, `reviewer` and `resume` replace a kind's whole command line for that role. In any
argv item, placeholders are filled in; an item whose placeholders are all empty is left out, so
`"--model={model}"` disappears when no model is set.

Placeholders: {prompt_file}, {task_id}, {lane}, {stage}, {workspace}, {python}, {repo},
{worker_id}, {program}, {model}, {max_turns}, {budget_usd}, {session_id}, {test_command}.
"""

from __future__ import annotations

import shlex
import string
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from django.conf import settings

PROMPT_MODES = ("stdin", "file")
OUTPUT_FORMATS = ("text", "stream-json")
KINDS = ("claude", "codex", "gemini", "aider", "command", "simulated")
PLACEHOLDERS = frozenset(
    {
        "prompt_file",
        "task_id",
        "lane",
        "stage",
        "workspace",
        "python",
        "repo",
        "worker_id",
        "program",
        "model",
        "max_turns",
        "budget_usd",
        "session_id",
        "test_command",
    }
)
DEFAULT_TIMEOUT_SECONDS = 3600.0
DEFAULT_MAX_TURNS = 40
REPO_DIR = Path(__file__).resolve().parent.parent
SIMULATED_AGENT = REPO_DIR / "workers_app" / "agents" / "simulated_agent.py"
ARGV_KEYS = ("argv", "builder", "reviewer", "resume", "extra_args")


class ProfileError(ValueError):
    """A profile is unknown or misconfigured; the message says what to fix."""


def _placeholders(item: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(item) if f is not None}


@dataclass(frozen=True)
class AgentProfile:
    name: str
    argv: tuple[str, ...] = ()
    prompt: str = "stdin"
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    kind: str = "command"
    program: str = ""
    model: str = ""
    builder: tuple[str, ...] = ()
    reviewer: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    output: str = "text"
    max_turns: int = DEFAULT_MAX_TURNS
    test_command: str = ""

    def render(self, template: tuple[str, ...] | list[str], values: dict[str, str]) -> list[str]:
        """Fill the placeholders of every item; an item whose placeholders are all empty goes."""
        rendered = []
        for item in template:
            try:
                names = _placeholders(item)
                text = item.format_map(values)
            except (KeyError, ValueError, IndexError) as exc:
                raise ProfileError(
                    f"agent profile {self.name!r}: argv item {item!r} is not a valid template "
                    f"({exc}); placeholders are {', '.join(sorted(PLACEHOLDERS))}"
                ) from None
            if names and not any(values.get(name) for name in names):
                continue
            rendered.append(text)
        return rendered

    def render_argv(self, values: dict[str, str]) -> list[str]:
        """The `command` kind's argv: the profile's own, filled in."""
        if not self.argv:
            raise ProfileError(
                f"agent profile {self.name!r} has no command; pass --agent-command "
                '"PROGRAM ARGS…" or give the profile an argv'
            )
        return self.render(self.argv, values)

    @property
    def uses_prompt_file(self) -> bool:
        templates = (self.argv, self.builder, self.reviewer, self.resume, self.extra_args)
        return self.prompt == "file" or any(
            "{prompt_file}" in item for template in templates for item in template
        )

    @property
    def runnable(self) -> bool:
        """False for a `command` profile with nothing to run."""
        return self.kind != "command" or bool(self.argv)


BUILTIN_PROFILES: dict[str, AgentProfile] = {
    profile.name: profile
    for profile in (
        AgentProfile(
            "claude",
            kind="claude",
            program="claude",
            description="Claude Code headless (stream-json): edits and commits in its worktree; "
            "reviewers read only.",
        ),
        AgentProfile(
            "codex",
            kind="codex",
            program="codex",
            description="OpenAI Codex CLI (codex exec --json); the worker commits its changes.",
        ),
        AgentProfile(
            "aider",
            kind="aider",
            program="aider",
            prompt="file",
            description="Aider, one message from a file; reviewers in ask mode.",
        ),
        AgentProfile(
            "gemini",
            kind="gemini",
            program="gemini",
            description="Gemini CLI headless (stream-json); reviewers in plan mode.",
        ),
        AgentProfile(
            "command",
            kind="command",
            description="Any program: give its argv with --agent-command; prompt on stdin.",
        ),
        AgentProfile(
            "simulated",
            ("{python}", str(SIMULATED_AGENT)),
            kind="simulated",
            timeout=300.0,
            description="SIMULATED agent: calls no model, writes a note file in a git worktree, "
            "prints plausible verdicts so the factory can be watched without an API key.",
        ),
    )
}


def _string_list(value: object, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise ProfileError(f"{where}: {key!r} must be a list of strings")
    return tuple(value)


def _command(value: object, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, str):
        raise ProfileError(f"{where}: 'command' must be a string")
    return split_command(value)


def _string(value: object, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise ProfileError(f"{where}: {key!r} must be a string")
    return value


def _timeout(value: object, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ProfileError(f"{where}: 'timeout' must be a positive number of seconds")
    return float(value)


def _max_turns(value: object, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
        raise ProfileError(f"{where}: 'max_turns' must be a whole number from 1 to 10000")
    return value


def _env(value: object, where: str, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ProfileError(f"{where}: 'env' must map names to strings")
    return dict(value)


# Each key a profile may set: the profile field it sets and how its value is checked, in the
# order they are checked (`command` after `argv`: given both, the command line wins).
_FIELDS: dict[str, tuple[str, Callable[[object, str, str], object]]] = {
    **{key: (key, _string_list) for key in ARGV_KEYS},
    "command": ("argv", _command),
    **{
        key: (key, _string)
        for key in ("kind", "program", "model", "output", "test_command", "description", "prompt")
    },
    "timeout": ("timeout", _timeout),
    "max_turns": ("max_turns", _max_turns),
    "env": ("env", _env),
}
PROFILE_KEYS = frozenset(_FIELDS)


def _profile_from_mapping(name: str, data: object, *, source: str) -> AgentProfile:
    where = f"agent profile {name!r} in {source}"
    if not isinstance(data, dict):
        raise ProfileError(f"{where} must be a table of settings")
    unknown = set(data) - PROFILE_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    base = BUILTIN_PROFILES.get(name)
    if base is None:
        # A new profile with an argv and no kind is today's generic command.
        base = AgentProfile(name, kind=str(data.get("kind", "command")))
    changes: dict[str, Any] = {}
    for key, (attribute, read) in _FIELDS.items():
        if key in data:
            changes[attribute] = read(data[key], where, key)
    if ("argv" in data or "command" in data) and "kind" not in data:
        # A whole command line of one's own, as before kinds: run exactly it, read it as text.
        changes["kind"] = "command"
    profile = replace(base, name=name, **changes)
    _check_choices(profile, where)
    _check_placeholders(profile, where)
    return profile


def _check_choices(profile: AgentProfile, where: str) -> None:
    if profile.kind not in KINDS:
        raise ProfileError(
            f"{where}: 'kind' must be one of {', '.join(KINDS)}, not {profile.kind!r}"
        )
    if profile.prompt not in PROMPT_MODES:
        raise ProfileError(f"{where}: 'prompt' must be 'stdin' or 'file', not {profile.prompt!r}")
    if profile.output not in OUTPUT_FORMATS:
        raise ProfileError(
            f"{where}: 'output' must be 'text' or 'stream-json', not {profile.output!r}"
        )


def _check_placeholders(profile: AgentProfile, where: str) -> None:
    for item in (
        *profile.argv,
        *profile.builder,
        *profile.reviewer,
        *profile.resume,
        *profile.extra_args,
    ):
        try:
            names = _placeholders(item)
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
    for name, value in settings.VIBE_AGENT_PROFILES.items():
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
        return name if get_profile(name).runnable else ""
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
    profile = replace(base, argv=split_command(command), kind="command")
    _check_placeholders(profile, f"--agent-command {command!r}")
    return profile


def template_values(**values: object) -> dict[str, str]:
    """Values for the argv placeholders, with the interpreter and repository filled in."""
    out = {name: "" for name in PLACEHOLDERS}
    out.update(python=sys.executable, repo=str(REPO_DIR))
    out.update({k: "" if v is None else str(v) for k, v in values.items()})
    return out
