"""How fast the kanban stays as the tables grow: the board page, its 5-second partial refresh,
the metrics bar, the worker pool and a task's detail, over Django's test client.

Run from the repository root:

    .venv/bin/python bench/board.py                      # 100,000 and 1,000,000 tasks
    .venv/bin/python bench/board.py --tasks 100000 --runs 50

Each size gets its own SQLite file (WAL, the app's own pragmas) in a scratch folder: the schema
comes from `migrate`, then tasks and their history are written with plain `executemany` so the
seeding takes seconds, not hours. Most tasks are completed, spread over half a year, as in a
factory that has run for a while; a few thousand are open. Backend and frontend goals come with
their review and QA tasks (about half the rows), so the board folds real stage strips. Prints
p50/p95 per page and the number of queries each ran. Goals (2-core machine): board p95 < 75 ms
at 100,000 tasks and < 250 ms at 1,000,000.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LANES = ["backend", "frontend", "qa", "security", "ux", "data"]
OPEN_COUNTS = {
    "pending": 2_000,
    "awaiting_approval": 40,
    "in_progress": 12,
    "review_needed": 150,
    "blocked": 25,
    "dead_letter": 300,
}
ERROR_TYPES = ["agent_exit", "timeout", "bad_verdict", "lease_expired", "agent_missing"]
GOALS = [
    "Add rate limiting to the public API",
    "Fix the date picker on Safari",
    "Validate the March revenue export",
    "Audit the login flow for session fixation",
    "Write integration tests for the billing webhooks",
    "Redesign the pricing page for mobile",
]
HISTORY_DAYS = 180
BATCH = 50_000


def _stamp(moment: datetime) -> str:
    """Datetimes as Django stores them in SQLite (UTC, no offset)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


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


# Goals of these lanes go through a pipeline: a review, then QA, each a task of its own.
REVIEWERS = {"backend": "security", "frontend": "ux"}


def _seed(db_path: Path, total: int, rng: random.Random) -> None:
    """Write `total` tasks (mostly completed) and their history: people's goals, and for the
    goals of a pipeline lane their review and QA tasks, so the board folds real stage strips."""
    now = datetime.now(UTC).replace(tzinfo=None)
    workers = {lane: f"@{lane}-1" for lane in LANES}
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    open_statuses = [s for s, n in OPEN_COUNTS.items() for _ in range(n)]
    statuses = open_statuses + ["completed"] * total
    rng.shuffle(statuses)
    task_rows: list[tuple[object, ...]] = []
    history_rows: list[tuple[object, ...]] = []
    written = 0

    def flush() -> None:
        conn.executemany(
            "INSERT INTO tasks (id, goal, lane, status, priority, risk, worker_id, attempt_count,"
            " max_attempts, last_error_type, pipeline, parent_id, stage, pipeline_step,"
            " verdict, score, created_at, updated_at, started_at, finished_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            task_rows,
        )
        conn.executemany(
            "INSERT INTO task_history (task_id, from_status, to_status, actor, note, created_at)"
            " VALUES (?,?,?,?,?,?)",
            history_rows,
        )
        task_rows.clear()
        history_rows.clear()

    def add(status, lane, goal, created, *, parent=None, stage="", step=0, pipeline="none"):
        nonlocal written
        written += 1
        task_id = written
        started = created + timedelta(seconds=rng.uniform(5, 600))
        finished = started + timedelta(seconds=rng.uniform(20, 1800))
        worker = workers[lane] if status not in ("pending", "awaiting_approval") else None
        error = rng.choice(ERROR_TYPES) if status == "dead_letter" else ""
        attempts = 3 if status == "dead_letter" else (1 if status != "pending" else 0)
        done = status in ("completed", "dead_letter", "review_needed", "blocked")
        verdict = "PASS" if stage and status == "completed" else ""
        task_rows.append(
            (
                task_id,
                goal if not stage else f"{stage.title()} of task #{parent}: {goal}",
                lane,
                status,
                rng.randint(0, 100),
                "low",
                worker,
                attempts,
                3,
                error,
                pipeline,
                parent,
                stage,
                step,
                verdict,
                rng.randint(70, 100) if verdict else None,
                _stamp(created),
                _stamp(finished if done else created),
                _stamp(started) if worker else None,
                _stamp(finished) if done else None,
            )
        )
        history_rows.append((task_id, "", "pending", "cli", "submitted", _stamp(created)))
        if worker:
            history_rows.append(
                (task_id, "pending", "in_progress", f"worker:{worker}", "claimed", _stamp(started))
            )
        if done:
            history_rows.append(
                (task_id, "in_progress", status, f"worker:{worker}", "", _stamp(finished))
            )
        return task_id, finished

    for status in statuses:
        if written >= total:
            break
        lane = LANES[(written + 1) % len(LANES)]
        created = now - timedelta(seconds=rng.uniform(0, HISTORY_DAYS * 86400))
        goal = f"{rng.choice(GOALS)} (#{written + 1})"
        reviewer = REVIEWERS.get(lane)
        goal_id, finished = add(status, lane, goal, created, pipeline=lane if reviewer else "none")
        if not reviewer or status not in ("review_needed", "completed"):
            continue
        # The review (done) and QA (done for completed work, queued while in review).
        _, reviewed = add("completed", reviewer, goal, finished, parent=goal_id, stage="review")
        qa_status = "completed" if status == "completed" else "pending"
        add(qa_status, "qa", goal, reviewed, parent=goal_id, stage="qa", step=1)
        if len(task_rows) >= BATCH:
            flush()
    flush()
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def _time(client, url: str, runs: int, **headers) -> tuple[list[float], int]:
    from django.db import connection, reset_queries

    for _ in range(3):
        response = client.get(url, **headers)
        assert response.status_code == 200, (url, response.status_code)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        client.get(url, **headers)
        timings.append((time.perf_counter() - start) * 1000)
    from django.conf import settings

    settings.DEBUG = True
    reset_queries()
    client.get(url, **headers)
    queries = len(connection.queries)
    settings.DEBUG = False
    return timings, queries


def _p(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def bench_size(total: int, runs: int, scratch: Path) -> list[tuple]:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    db_path = Path(settings.DATABASES["default"]["NAME"])
    connection.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    connection.close()
    started = time.perf_counter()
    _seed(db_path, total, random.Random(total))
    seeded = time.perf_counter() - started
    print(f"\n{total:,} tasks seeded in {seeded:.1f} s ({db_path.stat().st_size / 1e6:.0f} MB)")

    # Not setup_test_environment(): its template instrumentation would dominate the timings.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.DEBUG = False  # no per-query logging, as in production
    User.objects.filter(username="bench").delete()
    user = User.objects.create_superuser("bench", "bench@example.com", "bench-password")
    client = Client()
    client.force_login(user)
    from tasks_app.models import Task

    detail_id = Task.objects.filter(status="dead_letter").values_list("pk", flat=True).first()
    pages = [
        ("board page", "/", {}),
        ("board refresh (htmx)", "/", {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "live"}),
        ("metrics bar", "/metrics/", {}),
        ("worker pool", "/workers/", {}),
        ("task detail", f"/tasks/{detail_id}/", {}),
        ("board, lane filter", "/?lane=backend", {}),
        ("board, reviews shown", "/?reviews=1", {}),
        ("board, search", "/?q=lane%3Abackend+rate+limiting", {}),
        ("board, id search", f"/?q=%23{detail_id}", {}),
    ]
    rows = []
    for label, url, headers in pages:
        timings, queries = _time(client, url, runs, **headers)
        rows.append((total, label, statistics.median(timings), _p(timings, 95), queries))
        p50, p95 = rows[-1][2], rows[-1][3]
        print(f"  {label:<22} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   {queries} queries")
    connection.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=40, help="timed requests per page")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args()
    if any(n < sum(OPEN_COUNTS.values()) for n in args.tasks):
        parser.error(f"--tasks must each be at least {sum(OPEN_COUNTS.values())}")
    scratch = Path(tempfile.mkdtemp(prefix="vibe-bench-board-"))
    try:
        _setup_django(scratch / "bench_board.db", scratch)
        print(f"board benchmark: {os.cpu_count()} CPUs, {args.runs} timed requests per page")
        rows = []
        for total in args.tasks:
            rows += bench_size(total, args.runs, scratch)
        print("\nsummary (p95 of the board page; goals: 75 ms at 100k, 250 ms at 1M)")
        for total, label, _p50, p95, _q in rows:
            if label == "board page":
                goal = 75 if total <= 100_000 else 250
                verdict = "ok" if p95 < goal else "SLOWER THAN GOAL"
                print(f"  {total:>9,} tasks: {p95:.1f} ms ({verdict})")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch}")


if __name__ == "__main__":
    main()
