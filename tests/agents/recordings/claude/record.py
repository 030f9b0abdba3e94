"""Record real Claude Code output against the stand-in API, for the reader's unit tests.

    .venv/bin/python tests/agents/recordings/claude/record.py [PATH_TO_CLAUDE]

Each case writes NAME.stdout.jsonl, NAME.stderr.txt and NAME.json (argv, exit code, version).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vibe_project.settings")

from tests.standins.anthropic_api import AUTH_ERROR, RATE_LIMIT_ERROR, AnthropicStandIn  # noqa: E402
from workers_app.adapters.base import RunContext  # noqa: E402
from workers_app.adapters.claude import ClaudeKind  # noqa: E402
from workers_app.profiles import AgentProfile, template_values  # noqa: E402

DEFAULT_CLAUDE = Path.home() / ".cache/vibe-factory/agent-clis/bin/claude"


def _repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir()
    for args in (
        ["init", "-q"],
        ["config", "user.name", "Recorder"],
        ["config", "user.email", "recorder@example.com"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / "README").write_text("hi\n")
    subprocess.run(["git", "add", "README"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


def record(name: str, claude: str, script: str, *, retries: int = 0, set_up=None, **ctx_kw):
    kind = ClaudeKind()
    max_turns = ctx_kw.pop("max_turns", 10)
    budget = ctx_kw.get("budget_usd")
    keep_env = ctx_kw.pop("keep_env", True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        AnthropicStandIn(script, input_tokens=ctx_kw.pop("input_tokens", 120)) as api,
    ):
        if set_up:
            set_up(api)
        repo = _repo(Path(tmp))
        (Path(tmp) / "home").mkdir()
        profile = AgentProfile("claude", kind="claude", program=claude, max_turns=max_turns)
        values = template_values(workspace=repo, max_turns=max_turns, budget_usd=budget or "")
        ctx = RunContext(workspace=repo, values=values, as_root=os.geteuid() == 0, **ctx_kw)
        argv = kind.argv(profile, ctx)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": f"{tmp}/home",
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-key",
            "CLAUDE_CODE_MAX_RETRIES": str(retries),
            **(kind.env(profile, ctx) if keep_env else {}),
        }
        done = subprocess.run(
            argv, input="Do the task.", cwd=repo, env=env, capture_output=True, text=True
        )
    (HERE / f"{name}.stdout.jsonl").write_text(done.stdout)
    (HERE / f"{name}.stderr.txt").write_text(done.stderr)
    version = subprocess.run([claude, "--version"], capture_output=True, text=True).stdout
    meta = {"argv": argv, "exit_code": done.returncode, "version": version.strip()}
    (HERE / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(name, done.returncode)


def main() -> None:
    claude = sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_CLAUDE)
    record("builder", claude, "builder", role="builder")
    record("reviewer", claude, "reviewer", role="reviewer", set_up=_reviewer_attempts)
    record(
        "auth_401",
        claude,
        "builder",
        role="builder",
        set_up=lambda a: a.fail_always(401, AUTH_ERROR),
    )
    record(
        "rate_limit_429",
        claude,
        "builder",
        role="builder",
        retries=1,
        set_up=lambda a: a.fail_always(429, RATE_LIMIT_ERROR, **{"retry-after": "1"}),
    )
    record("max_turns", claude, "loop", role="builder", max_turns=2)
    record(
        "budget", claude, "loop", role="builder", budget_usd=Decimal("0.5"), input_tokens=200_000
    )
    record(
        "resume_unknown",
        claude,
        "builder",
        role="builder",
        session_id="6b0a2d1e-8c53-4f7e-9d42-0f3c2a9e7b11",
    )
    # bypassPermissions as root without IS_SANDBOX=1: the CLI refuses before it starts.
    record("root_bypass_refused", claude, "builder", role="builder", sandboxed=True, keep_env=False)


def _reviewer_attempts(api: AnthropicStandIn) -> None:
    api.reviewer_attempts = [
        ("Write", {"file_path": "{workspace}/review-notes.txt", "content": "notes\n"}),
        ("Bash", {"command": "touch {workspace}/touched.txt"}),
        ("Bash", {"command": "git log --oneline"}),
    ]


if __name__ == "__main__":
    main()
