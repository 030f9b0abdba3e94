"""The task file `vibe submit --from-file` reads: JSON Lines, or one goal per line.

Every line is checked before anything is submitted; a problem names its line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from . import lifecycle
from .choices import Risk

JSONL_KEYS = {"goal", "lane", "priority", "risk", "after", "pipeline", "deliver", "key"}


def read_task_file(path: str, *, default_lane: str | None) -> list[lifecycle.NewTask]:
    """JSON Lines (one object per line) or plain text (one goal per line; lane from --lane).

    Raises CommandError naming the line of the first problem; nothing is submitted then.
    """
    numbered = [
        (n, line.strip())
        for n, line in enumerate(_read_text(path).splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise CommandError(f"{path}: no tasks in the file")
    is_jsonl = numbered[0][1].startswith("{")
    if not is_jsonl and not default_lane:
        raise CommandError(f"{path}: plain-text files need --lane")
    specs = []
    for number, line in numbered:
        where = f"{path}: line {number}"
        if is_jsonl:
            spec = _jsonl_spec(_json_object(line, where), where, default_lane)
        else:
            spec = lifecycle.NewTask(goal=line, lane=default_lane or "")
        try:
            lifecycle.validate_new(spec)
        except lifecycle.LifecycleError as exc:
            raise CommandError(f"{where}: {exc}") from None
        specs.append(spec)
    return specs


def _read_text(path: str) -> str:
    """The file's text, or stdin's for "-"."""
    try:
        if path == "-":
            # The bytes, decoded strictly: the text layer would turn bad bytes into surrogates
            # that only fail later, deep in the database driver.
            stdin = getattr(sys.stdin, "buffer", None)
            return stdin.read().decode("utf-8") if stdin is not None else sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read it ({exc})") from None


def _json_object(line: str, where: str) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise CommandError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # a number past Python's 4,300 digits; drop its advice
        reason = str(exc).split(";")[0]
        raise CommandError(f"{where}: not valid JSON ({reason})") from None
    if not isinstance(item, dict):
        raise CommandError(f"{where}: expected a JSON object")
    return item


def _jsonl_spec(item: dict[str, Any], where: str, default_lane: str | None) -> lifecycle.NewTask:
    unknown = sorted(set(item) - JSONL_KEYS)
    if unknown:
        raise CommandError(
            f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(JSONL_KEYS))}"
        )
    lane = item.get("lane", default_lane)
    if not lane:
        raise CommandError(f'{where}: no lane (give "lane" or --lane)')
    after = item.get("after", [])
    if not isinstance(after, list) or not all(
        isinstance(a, int) and not isinstance(a, bool) for a in after
    ):
        raise CommandError(f'{where}: "after" must be a list of task ids')
    key = item.get("key")
    # Wrong types pass through: validate_new names them in the words a person reads.
    return lifecycle.NewTask(
        goal=item.get("goal", ""),
        lane=lane,
        priority=item.get("priority", 50),
        risk=item.get("risk", Risk.LOW),
        depends_on=after,
        pipeline=item.get("pipeline"),
        delivery=item.get("deliver"),
        key=key if isinstance(key, str) else "",
    )
