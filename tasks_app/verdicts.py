"""The auditors' output contract: one fenced JSON verdict block at the end of their output.

    ```json
    {"verdict": "PASS" | "FAIL", "score": 0-100, "findings": [...], "summary": "..."}
    ```

`parse_verdict` turns an agent's output into a clean result dict or raises `VerdictError` with a
message precise enough for a person to fix the agent's prompt.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .choices import Lane, Severity, Verdict

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\r?\n(.*?)\r?\n?```", re.DOTALL)
MAX_FINDINGS = 200
MAX_TEXT = 4000


class VerdictError(ValueError):
    """The agent's verdict block is missing or does not follow the contract."""


def _text(value: object, field: str, *, required: bool = False) -> str:
    if value is None:
        if required:
            raise VerdictError(f"finding field {field!r} is required")
        return ""
    if not isinstance(value, str):
        raise VerdictError(f"field {field!r} must be a string, not {type(value).__name__}")
    return value[:MAX_TEXT]


def validate_result(data: object, *, lane: str = "") -> dict[str, Any]:
    """Check a verdict dict against the contract; return a normalised copy."""
    if not isinstance(data, dict):
        raise VerdictError("the verdict block must be a JSON object")
    return {
        "verdict": _verdict(data),
        "score": _score(data, lane),
        "findings": _findings(data),
        "summary": _text(data.get("summary"), "summary"),
    }


def _verdict(data: dict[str, Any]) -> str:
    verdict = data.get("verdict")
    if isinstance(verdict, str):
        verdict = verdict.strip().upper()
    if verdict not in Verdict.values:
        raise VerdictError(f'"verdict" must be "PASS" or "FAIL", got {data.get("verdict")!r}')
    return str(verdict)


def _score(data: dict[str, Any], lane: str) -> int | None:
    score = data.get("score")
    if score is None:
        if lane == Lane.UX:
            raise VerdictError('the UX audit must give a "score" from 0 to 100')
        return None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 100:
        raise VerdictError(f'"score" must be a number from 0 to 100, got {score!r}')
    return round(score)


def _findings(data: dict[str, Any]) -> list[dict[str, str]]:
    findings = data.get("findings", [])
    if findings is None:
        return []
    if not isinstance(findings, list):
        raise VerdictError('"findings" must be a list')
    return [_finding(index, item) for index, item in enumerate(findings[:MAX_FINDINGS], start=1)]


def _finding(index: int, item: object) -> dict[str, str]:
    if not isinstance(item, dict):
        raise VerdictError(f"finding {index} must be an object")
    severity = item.get("severity")
    if isinstance(severity, str):
        severity = severity.strip().upper()
    if severity not in Severity.values:
        allowed = "|".join(Severity.values)
        raise VerdictError(f"finding {index}: severity must be {allowed}, got {severity!r}")
    try:
        return {
            "severity": str(severity),
            "title": _text(item.get("title"), "title", required=True),
            "detail": _text(item.get("detail"), "detail"),
            "file": _text(item.get("file"), "file"),
        }
    except VerdictError as exc:
        raise VerdictError(f"finding {index}: {exc}") from None


def parse_verdict(output: str, *, lane: str = "") -> dict[str, Any]:
    """Read the last fenced JSON block of an auditor's output."""
    blocks = _FENCE.findall(output or "")
    if not blocks:
        raise VerdictError("no fenced ```json verdict block found at the end of the output")
    raw = blocks[-1].strip()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise VerdictError(f"the verdict block is not valid JSON: {exc}") from None
    except RecursionError:  # the agent's output, not the worker, is at fault: a bad verdict
        raise VerdictError("the verdict block is not valid JSON: it is nested too deeply") from None
    except ValueError as exc:  # a number past Python's 4,300 digits
        reason = str(exc).split(";")[0]
        raise VerdictError(f"the verdict block is not valid JSON: {reason}") from None
    return validate_result(data, lane=lane)
