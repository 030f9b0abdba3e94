"""Test agent that keeps the prompt it received: writes stdin to $TEST_CAPTURE_DIR.

The file is named task-<VIBE_TASK_ID>-attempt-<VIBE_TASK_ATTEMPT>-<pid>.txt; prints
"capture agent: saved <path>" and exits 0.
"""

import os
import sys
from pathlib import Path

prompt = sys.stdin.read() if sys.stdin is not None else ""
folder = Path(os.environ["TEST_CAPTURE_DIR"])
folder.mkdir(parents=True, exist_ok=True)
task = os.environ.get("VIBE_TASK_ID", "x")
attempt = os.environ.get("VIBE_TASK_ATTEMPT", "x")
path = folder / f"task-{task}-attempt-{attempt}-{os.getpid()}.txt"
path.write_text(prompt, encoding="utf-8")
print(f"capture agent: saved {path}", flush=True)
sys.exit(0)
