"""What a live transcript costs: the task page's 1.5-second poll for new events, and the first
load of a task whose run has a long transcript, over Django's test client as a Viewer.

Run from the repository root:

    .venv/bin/python bench/transcript.py                  # a run of 10,000 events
    .venv/bin/python bench/transcript.py --events 50000 --runs 200

A throwaway SQLite file (WAL, the app's own pragmas) gets the schema from `migrate`, one
running task and its run's events, written with plain `executemany`. Prints p50/p95 per
request, the response size and the queries each ran. Goals: the poll with nothing new p95
< 50 ms and < 2 KB (body plus headers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_P95_GOAL_MS = 50
POLL_SIZE_GOAL = 2048


def _setup_django(db_path: Path, scratch: Path) -> None:
    os.environ.update(
        DATABASE_URL=f"sqlite:///{db_path}",
        DJANGO_SETTINGS_MODULE="vibe_project.settings",
        VIBE_VAR_DIR=str(scratch),
        VIBE_LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


def _events(count: int):
    """A believable mix: messages, tool calls with their results, now and then an error."""
    for seq in range(1, count + 1):
        step = seq % 5
        if step == 1:
            yield seq, "message", f"Step {seq}: reading the throttling code next.", {}
        elif step == 2:
            yield seq, "tool_call", f"grep -rn throttle api/ # {seq}", {"name": "Bash", "id": seq}
        elif step == 3:
            text = "api/throttling.py:12: class Throttle:\n" * 8
            yield seq, "tool_result", text, {"id": seq - 1, "is_error": seq % 50 == 3}
        elif step == 4:
            yield seq, "output", f"running tests … {seq} passed", {}
        else:
            yield seq, "system", "checkpoint", {"by": "worker"}


def _seed(db_path: Path, events: int) -> tuple[int, int]:
    from django.utils import timezone

    from tasks_app import lifecycle
    from tasks_app.models import Run

    task = lifecycle.submit("Add rate limiting to the public API", lane="backend", actor="cli")
    claimed = lifecycle.claim_next("@backend-1")
    assert claimed is not None and claimed.pk == task.pk
    run = Run.objects.create(
        task=task, worker_id="@backend-1", attempt=1, agent="claude", kind="claude"
    )
    now = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn = sqlite3.connect(db_path)
    conn.executemany(
        "INSERT INTO task_run_events (run_id, seq, kind, text, data, created_at)"
        " VALUES (?,?,?,?,?,?)",
        (
            (run.pk, seq, kind, text, json.dumps(data), now)
            for seq, kind, text, data in _events(events)
        ),
    )
    conn.execute("UPDATE task_runs SET event_count = ? WHERE id = ?", (events, run.pk))
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    assert Run.objects.get(pk=run.pk).finished_at is None, timezone.now()
    return task.pk, run.pk


def _time(client, url: str, runs: int, **headers) -> tuple[list[float], int, int]:
    from django.conf import settings
    from django.db import connection, reset_queries

    for _ in range(3):
        response = client.get(url, **headers)
        assert response.status_code == 200, (url, response.status_code)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url, **headers)
        timings.append((time.perf_counter() - start) * 1000)
    header_text = "".join(f"{k}: {v}\r\n" for k, v in response.items())
    size = len(response.content) + len(header_text)
    settings.DEBUG = True
    reset_queries()
    client.get(url, **headers)
    queries = len(connection.queries)
    settings.DEBUG = False
    return timings, size, queries


def _p(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events in the run")
    parser.add_argument("--runs", type=int, default=200, help="timed polls")
    parser.add_argument("--page-runs", type=int, default=20, help="timed first loads")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be at least 1")
    scratch = Path(tempfile.mkdtemp(prefix="vibe-bench-transcript-"))
    try:
        db_path = scratch / "bench_transcript.db"
        _setup_django(db_path, scratch)
        from django.conf import settings
        from django.contrib.auth.models import Group, User
        from django.core.management import call_command
        from django.test import Client

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        task_id, run_id = _seed(db_path, args.events)
        print(
            f"transcript benchmark: {os.cpu_count()} CPUs, a run of {args.events:,} events "
            f"seeded in {time.perf_counter() - started:.1f} s"
        )

        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
        settings.DEBUG = False
        user = User.objects.create_user("bench-viewer", password="bench-password")
        user.groups.add(Group.objects.get(name="Viewer"))
        client = Client()
        client.force_login(user)

        base = f"/tasks/{task_id}/runs/{run_id}/events/"
        htmx = {"HTTP_HX_REQUEST": "true"}
        rows = [
            ("poll, nothing new", f"{base}?after={args.events}", args.runs, {}),
            ("poll, 5 new events", f"{base}?after={args.events - 5}", args.runs, {}),
            ("show earlier (500)", f"{base}?before={args.events - 499}", args.page_runs, {}),
            ("task page, first load", f"/tasks/{task_id}/", args.page_runs, {}),
            ("panel facts refresh", f"/tasks/{task_id}/?part=summary", args.runs, htmx),
        ]
        results = {}
        for label, url, runs, headers in rows:
            timings, size, queries = _time(client, url, runs, **headers)
            p50, p95 = statistics.median(timings), _p(timings, 95)
            results[label] = (p95, size)
            print(
                f"  {label:<22} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   "
                f"{size:>8,} bytes   {queries} queries"
            )
        p95, size = results["poll, nothing new"]
        verdict = "ok" if p95 < POLL_P95_GOAL_MS and size < POLL_SIZE_GOAL else "MISSES THE GOAL"
        print(
            f"\nsummary: the live poll with nothing new, p95 {p95:.2f} ms (goal < "
            f"{POLL_P95_GOAL_MS} ms), {size} bytes with headers (goal < {POLL_SIZE_GOAL}): "
            f"{verdict}"
        )
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch}")


if __name__ == "__main__":
    main()
