"""Test agent that works in its current directory, as told by its arguments.

  --write PATH     write two lines to PATH (folders made as needed); repeatable
  --commit         `git add -A && git commit` what it wrote (as the GIT_AUTHOR_* it was given)
  --verdict KIND   end with a ```json verdict block: pass or fail
  --lines N        print N numbered lines first (a long transcript)

Reads the prompt from stdin and exits 0.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

FENCE = "```"
VERDICTS = {
    "pass": {"verdict": "PASS", "score": 95, "findings": [], "summary": "All checks passed."},
    "fail": {
        "verdict": "FAIL",
        "score": 30,
        "findings": [{"severity": "HIGH", "title": "Missing check", "detail": "", "file": ""}],
        "summary": "One HIGH finding.",
    },
}

parser = argparse.ArgumentParser()
parser.add_argument("--write", action="append", default=[])
parser.add_argument("--commit", action="store_true")
parser.add_argument("--verdict", choices=sorted(VERDICTS))
parser.add_argument("--lines", type=int, default=0)
args = parser.parse_args()

if sys.stdin is not None:
    sys.stdin.read()
for number in range(1, args.lines + 1):
    print(f"line {number:05d} of the long transcript", flush=number == args.lines)
for name in args.write:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"written by the worktree agent\n{name}\n")
    print(f"wrote {name}", flush=True)
if args.commit:
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "the agent's own commit"], check=True)
    print("committed", flush=True)
if args.verdict:
    print(f"{FENCE}json\n{json.dumps(VERDICTS[args.verdict], indent=2)}\n{FENCE}", flush=True)
else:
    print("worktree agent: done", flush=True)
