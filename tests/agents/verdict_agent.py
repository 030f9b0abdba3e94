"""Test auditor that prints a verdict block chosen by env TEST_VERDICT.

TEST_VERDICT = pass (default) | fail | critical | malformed | missing | deep (a verdict nested
30,000 lists deep, past any JSON parser's recursion limit); always exits 0.
"""

import json
import os
import sys

FENCE = "```"
VERDICTS = {
    "pass": {"verdict": "PASS", "score": 95, "findings": [], "summary": "All checks passed."},
    "fail": {
        "verdict": "FAIL",
        "score": 40,
        "findings": [
            {
                "severity": "HIGH",
                "title": "Missing alt text",
                "detail": "The logo image has no alt attribute.",
                "file": "templates/base.html",
            }
        ],
        "summary": "One HIGH accessibility finding.",
    },
    "critical": {
        "verdict": "FAIL",
        "score": 10,
        "findings": [
            {
                "severity": "CRITICAL",
                "title": "Hardcoded secret",
                "detail": "An API token literal is committed in settings.",
                "file": "settings.py",
            }
        ],
        "summary": "One CRITICAL security finding.",
    },
}

if sys.stdin is not None:
    sys.stdin.read()
kind = os.environ.get("TEST_VERDICT", "pass").strip().lower()
print(f"verdict agent: reviewing (TEST_VERDICT={kind})", flush=True)
if kind in VERDICTS:
    print(f"{FENCE}json\n{json.dumps(VERDICTS[kind], indent=2)}\n{FENCE}", flush=True)
elif kind == "malformed":
    print(f'{FENCE}json\n{{"verdict": "PASS", "findings": [,]\n{FENCE}', flush=True)
elif kind == "deep":
    deep = "[" * 30_000 + "]" * 30_000
    print(f'{FENCE}json\n{{"verdict": "PASS", "findings": {deep}}}\n{FENCE}', flush=True)
elif kind == "missing":
    print("verdict agent: review finished, but no verdict block is printed", flush=True)
else:
    sys.exit(f"verdict agent: unknown TEST_VERDICT {kind!r}")
sys.exit(0)
