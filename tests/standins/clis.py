"""The real agent CLIs, installed pinned by bin/ensure-agent-clis (the test-deps step)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="session")
def agent_cli_bin() -> Path:
    """The folder holding `claude`, `codex`, `gemini` and `aider`; installs them if missing."""
    done = subprocess.run(
        [str(REPO_ROOT / "bin" / "ensure-agent-clis")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bin/ensure-agent-clis failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])
