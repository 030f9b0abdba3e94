"""Preflight: what a worker checks before it takes any work, so a broken setup fails once.

Without it, a worker whose agent is not installed, whose key is missing or whose sandbox cannot
start claims task after task and fails each one. `check` answers with one sentence per
problem (empty when all is well); `runworker` refuses to start on any of them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .adapters import kind_for
from .profiles import AgentProfile

VERSION_TIMEOUT_SECONDS = 20.0
GIT_TIMEOUT_SECONDS = 10.0
OUTPUT_LIMIT = 200
# runworker's refusal says "<worker> refused to start: …"; runfactory looks for it.
REFUSED_MARK = "refused to start:"


def check(
    profile: AgentProfile,
    *,
    sandbox_mode: str,
    will_commit: bool,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Problems that would fail every task this worker runs, as one-line sentences.

    `env` is the worker's environment (default: this process's): PATH to find the agent, the
    key variables, the git configuration.
    """
    env = dict(os.environ if env is None else env)
    problems = []
    problems += _agent_problems(profile, env)
    problems += _key_problems(profile, env)
    if will_commit:
        problems += _git_identity_problems(env)
    if sandbox_mode == "bwrap":
        problems += _sandbox_problems()
    return problems


def _first_line(data: bytes) -> str:
    for line in data.decode("utf-8", "replace").replace("\x00", "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= OUTPUT_LIMIT else line[: OUTPUT_LIMIT - 1] + "…"
    return ""


def _run(
    argv: list[str], *, env: dict[str, str], cwd: str | None, timeout: float
) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of a short command in its own process group; the whole group
    is killed at the time limit, so a CLI that spawned helpers cannot keep us waiting."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def _agent_problems(profile: AgentProfile, env: dict[str, str]) -> list[str]:
    argv = kind_for(profile).version_argv(profile)
    if not argv:
        return []  # a command profile's own program need not answer --version
    program = argv[0]
    if os.sep in program:
        path = Path(program).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            return [
                f"the agent program {program} of profile {profile.name!r} does not exist"
                " or is not executable"
            ]
        found = str(path)
    else:
        which = shutil.which(program, path=env.get("PATH", os.defpath))
        if which is None:
            return [
                f"the agent program {program!r} of profile {profile.name!r} is not on PATH "
                f"({env.get('PATH', '')}); install it (bin/ensure-agent-clis) or set the "
                "profile's program to its full path"
            ]
        found = which
    shown = " ".join([program, *argv[1:]])
    try:
        code, out, err = _run(
            [found, *argv[1:]], env=env, cwd=None, timeout=VERSION_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        return [f"`{shown}` did not answer within {VERSION_TIMEOUT_SECONDS:g}s"]
    except OSError as exc:
        return [f"`{shown}` could not start: {exc.strerror or exc}"]
    if code != 0:
        said = _first_line(err) or _first_line(out)
        return [f"`{shown}` failed with exit status {code}" + (f": {said}" if said else "")]
    return []


def _key_problems(profile: AgentProfile, env: dict[str, str]) -> list[str]:
    names = kind_for(profile).key_env
    if not names or any(env.get(n) or profile.env.get(n) for n in names):
        return []
    return [
        f"the {profile.kind} agent needs an API key: set {' or '.join(names)} in the worker's "
        "environment or the profile's env"
    ]


def _git_identity_problems(env: dict[str, str]) -> list[str]:
    """The worker commits as VIBE_GIT_AUTHOR, or as itself at this host: git must be there.

    An identity always exists (the worker's own, passed to agents that commit themselves as
    GIT_AUTHOR_*/GIT_COMMITTER_*), so only a git that cannot run is a problem.
    """
    try:
        code, _out, err = _run(["git", "--version"], env=env, cwd=None, timeout=GIT_TIMEOUT_SECONDS)
    except FileNotFoundError:
        return ["git is not installed, but the worker commits the agents' work"]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"git does not run ({exc}), but the worker commits the agents' work"]
    if code != 0:
        return [f"git --version failed: {_first_line(err)}"]
    return []


def _sandbox_problems() -> list[str]:
    try:
        sandbox = importlib.import_module("workers_app.sandbox")
    except ModuleNotFoundError as exc:
        if exc.name == "workers_app.sandbox":
            return []  # not built yet: nothing to check
        raise
    problem = sandbox.trial()
    if problem:
        return [f"the bubblewrap sandbox does not work (VIBE_AGENT_SANDBOX=bwrap): {problem}"]
    return []
