"""SIMULATED agent for Vibe Factory: follows the agent contract but calls no model.

It lets a new user watch the factory move without an API key. It reads the prompt (stdin, or
``--prompt-file PATH``), sleeps a little and prints made-up progress. In a git worktree a builder
appends one line to ``SIMULATED_CHANGES.md`` (so the worker has a change to commit and the
reviewers a diff); it edits nothing else. Builders print a summary and exit 0; auditors print
findings and end with one fenced json verdict block. About 1 run in 12 "crashes" (traceback on
stderr, exit 1).

Environment:
  VIBE_TASK_ID, VIBE_TASK_LANE (backend|frontend|qa|security|ux|data), VIBE_TASK_STAGE
  ("" for build work, else review|qa). It audits when the stage is set or the lane is
  security, ux, data or qa (the auditor lanes); otherwise it builds.
  VIBE_SIM_SLEEP   total sleep in seconds (float; default random 1-4; 0 for tests)
  VIBE_SIM_SEED    seeds ``random`` for repeatable runs
  VIBE_SIM_OUTCOME forces pass|fail|critical|crash (builders treat fail/critical as exit 1)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

TAG = "[simulated agent]"
OUTCOMES = ("pass", "fail", "critical", "crash")
Finding = tuple[str, str, str, str | None]  # severity, title, detail, file

CHECKS: dict[str, list[str]] = {
    "security": ["pip/npm audit", ".env leaks", "SQL injection", "secrets", "dependency CVEs"],
    "ux": ["semantic HTML", "ARIA labels", "keyboard flow", "contrast", "mobile viewport"],
    "data": ["schema", "nulls", "duplicates", "idempotency", "backfills", "PII"],
    "qa": ["acceptance criteria", "test suite", "regressions"],
}
BUILD_STEPS = ["exploring the repository", "planning", "editing files", "running tests"]
# One finding per line: "lane|severity|title|detail|file" (empty file means null). The first
# line of each lane is its CRITICAL finding; the second is the HIGH that every FAIL includes.
FINDINGS_TEXT = """
security|CRITICAL|Hardcoded secret|A token literal is assigned in settings.|vibe_project/settings.py
security|HIGH|Missing permission check|Retry view checks login only.|tasks_app/views.py
security|MEDIUM|Unpinned dependency|A new requirement has no version range.|pyproject.toml
security|LOW|Dependency audit not run|pip-audit is not available offline.|
ux|CRITICAL|Keyboard trap in dialog|Focus cannot leave the modal.|templates/tasks/_dialog.html
ux|HIGH|Missing alt text|The worker avatar image has no alt.|templates/workers/_pool.html
ux|MEDIUM|Low contrast on metadata|#999 on #fff is 2.8:1; needs 4.5:1.|static/css/app.css
ux|LOW|Vague link text|'more' links do not name their task.|templates/tasks/_card.html
data|CRITICAL|PII written to logs|Customer emails are logged during import.|pipelines/import.py
data|HIGH|Import is not idempotent|A rerun appends the same rows again.|pipelines/import.py
data|MEDIUM|Nulls dropped by inner join|Rows without customer id vanish.|pipelines/import.py
data|LOW|Undocumented column|summary_json has no description.|
qa|CRITICAL|Goal not delivered|No acceptance criterion is met by the diff.|
qa|HIGH|Acceptance criterion unmet|Retry does not reset attempt_count.|tasks_app/lifecycle.py
qa|MEDIUM|New behaviour untested|No test covers the error path.|
qa|LOW|Misleading name|do_it() should say what it does.|
"""
FINDINGS: dict[str, list[Finding]] = {}
for _row in FINDINGS_TEXT.strip().splitlines():
    _lane, _sev, _title, _detail, _file = _row.split("|")
    FINDINGS.setdefault(_lane, []).append((_sev, _title, _detail, _file or None))


def say(line: str) -> None:
    print(f"{TAG} {line}", flush=True)


def roll(is_auditor: bool, kind: str) -> str:
    forced = os.environ.get("VIBE_SIM_OUTCOME", "").strip().lower()
    if forced:
        if forced not in OUTCOMES:
            sys.exit(f"{TAG} VIBE_SIM_OUTCOME must be one of {', '.join(OUTCOMES)}")
        return forced
    if random.random() < 1 / 12:
        return "crash"
    if not is_auditor or random.random() >= 1 / 5:
        return "pass"
    return "critical" if kind == "security" and random.random() < 1 / 4 else "fail"


def pick_findings(outcome: str, kind: str) -> list[Finding]:
    if outcome == "pass":
        return []
    critical, high, *rest = FINDINGS[kind]
    chosen = [high, *random.sample(rest, random.randint(0, 2))]
    return [critical, *chosen[:2]] if outcome == "critical" else chosen


def read_prompt(prompt_file: str | None) -> str:
    if prompt_file:
        with open(prompt_file, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    if sys.stdin is not None and not sys.stdin.isatty():
        return sys.stdin.buffer.read().decode("utf-8", errors="replace")
    return ""


def pretend_steps(steps: list[str], pause: float, *, is_auditor: bool, outcome: str) -> bool:
    """Walk through the steps; False: the pretend crash happened on the way."""
    for i, step in enumerate(steps, 1):
        time.sleep(max(pause, 0) / len(steps))
        verb = "checking" if is_auditor else "(pretend)"
        say(f"step {i}/{len(steps)}: {verb} {step} ...")
        if outcome == "crash" and i == 2:
            print(
                f"{TAG} Traceback (most recent call last):\n"
                f'  File "simulated_agent.py", line 1, in <module>\n'
                f"SimulatedCrash: {TAG} pretend crash during {step!r} (nothing was changed)",
                file=sys.stderr,
                flush=True,
            )
            return False
    return True


def finish_build(outcome: str, task: str, goal: str) -> int:
    if outcome in ("fail", "critical"):
        print(f"{TAG} could not finish the goal: pretend tests are failing", file=sys.stderr)
        return 1
    if os.path.exists(".git"):
        with open("SIMULATED_CHANGES.md", "a", encoding="utf-8") as fh:
            fh.write(f"- task {task}: pretended to implement {goal[:80]}\n")
        say("wrote one line to SIMULATED_CHANGES.md")
    say("summary (simulated, no real code was written):")
    say(f"- pretended to implement: {goal[:80]}")
    say("- pretended to add 3 tests; pretend suite: all passed")
    return 0


def finish_review(outcome: str, kind: str, findings: list[Finding]) -> int:
    for sev, title, detail, path in findings:
        say(f"finding [{sev}] {title} ({path or 'no file'}): {detail}")
    verdict = "PASS" if outcome == "pass" else "FAIL"
    low = 80 if kind == "ux" else 85
    score = random.randint(low, 100) if verdict == "PASS" else random.randint(10, 69)
    summary = f"{TAG} {verdict}: {len(findings)} finding(s) from a simulated {kind} review."
    keys = ("severity", "title", "detail", "file")
    rows = [dict(zip(keys, finding, strict=True)) for finding in findings]
    block = {"verdict": verdict, "score": score, "findings": rows, "summary": summary}
    say(f"{kind} review done; verdict {verdict}.")
    print("```json\n" + json.dumps(block, indent=2) + "\n```", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Vibe Factory SIMULATED agent (no model).")
    parser.add_argument("--prompt-file", help="read the prompt from this file, not stdin")
    args = parser.parse_args()
    prompt = read_prompt(args.prompt_file)
    task = os.environ.get("VIBE_TASK_ID", "?")
    lane = os.environ.get("VIBE_TASK_LANE", "backend").strip().lower() or "backend"
    stage = os.environ.get("VIBE_TASK_STAGE", "").strip().lower()
    is_auditor = bool(stage) or lane in ("security", "ux", "data", "qa")
    kind = lane if lane in CHECKS else "qa"
    if seed := os.environ.get("VIBE_SIM_SEED"):
        random.seed(seed)
    outcome = roll(is_auditor, kind)
    findings = pick_findings(outcome, kind) if is_auditor else []  # drawn before the pause
    try:
        pause = float(os.environ.get("VIBE_SIM_SLEEP") or random.uniform(1, 4))
    except ValueError:
        sys.exit(f"{TAG} VIBE_SIM_SLEEP must be a number of seconds")
    role = f"{kind} auditor" if is_auditor else f"{lane} builder"
    say(f"task {task} lane={lane} stage={stage or '-'}: simulated {role}; no model")
    goal = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "(empty prompt)")
    say(f"reading prompt: {len(prompt)} chars, first line: {goal[:80]!r}")
    steps = CHECKS[kind] if is_auditor else BUILD_STEPS
    if not pretend_steps(steps, pause, is_auditor=is_auditor, outcome=outcome):
        return 1
    if is_auditor:
        return finish_review(outcome, kind, findings)
    return finish_build(outcome, task, goal)


if __name__ == "__main__":
    sys.exit(main())
