"""Claim→complete throughput of the lifecycle, against the raw SQLite ceiling.

Run from the repository root:

    .venv/bin/python bench/claims.py                 # SQLite and PostgreSQL, about a minute
    .venv/bin/python bench/claims.py --seconds 2 --skip-million --skip-postgres

Each worker process loops `claim_next` → `complete` with a no-op agent (no subprocess), so the
figure is the control plane's own cost per task. The same run measures a bare `sqlite3` loop
doing the minimum a claim→complete needs on the same schema and pragmas, and prints our rate as
a ratio to it. Double claims are counted from `task_history`: a task claimed more than once
shows more than one pending → in_progress row. See bench/README.md for the goals.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LANE = "backend"
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
WARMUP_CYCLES = 20
FINISHED_ROWS = 1_000_000


# --- Shared helpers ---------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    """Datetimes as Django stores them in SQLite, so ordering matches the ORM's."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _env(database_url: str, scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="vibe_project.settings",
        DJANGO_SECRET_KEY="bench-only-secret-key-not-for-production",
        # As in production: with DEBUG on, Django also records (and on SQLite re-quotes)
        # every statement, which is not the cost being measured here.
        DJANGO_DEBUG="0",
        DJANGO_ALLOWED_HOSTS="localhost",
        VIBE_VAR_DIR=str(scratch),
        VIBE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def _migrate(database_url: str, scratch: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        env=_env(database_url, scratch),
        check=True,
        cwd=REPO_ROOT,
    )


def _pending_rows(count: int, start: datetime) -> list[tuple]:
    rnd = random.Random(7)
    return [
        (f"bench task {n}", LANE, "pending", rnd.randint(0, 100), "none", _stamp(start), n)
        for n in range(count)
    ]


# --- The database under test ------------------------------------------------------------------


class SqliteTarget:
    """A fresh file database per measurement, copied from one migrated template."""

    name = "SQLite"

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.template = scratch / "template.db"
        self.path = scratch / "bench.db"
        _migrate(f"sqlite:///{self.template}", scratch)
        # The template is in WAL mode; fold the log in so a plain copy is the whole database.
        with sqlite3.connect(self.template) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=20)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=20000")
        return conn

    def reset(self, *, pending: int, finished: int, workers: int) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.template, self.path)
        conn = self._connect()
        now = datetime.now(UTC)
        conn.execute("BEGIN")
        if finished:
            old = _stamp(now - timedelta(days=30))
            conn.executemany(
                "INSERT INTO tasks (goal, lane, status, priority, pipeline, worker_id, "
                "created_at, updated_at, started_at, finished_at) "
                "VALUES (?, ?, 'completed', 50, 'none', '@bench-1', ?, ?, ?, ?)",
                ((f"finished {n}", LANE, old, old, old, old) for n in range(finished)),
            )
        conn.executemany(
            "INSERT INTO tasks (goal, lane, status, priority, pipeline, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [row[:6] + (row[5],) for row in _pending_rows(pending, now)],
        )
        conn.executemany(
            "INSERT INTO worker_health (worker_id, lane, tier, capacity_limit, status, "
            "priority_score, active_tasks) VALUES (?, ?, 'senior', 1, 'online', 50, 0)",
            [(f"@bench-{n}", LANE) for n in range(1, workers + 1)],
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()

    def double_claims(self) -> int:
        with sqlite3.connect(self.path) as conn:
            return _count_double_claims(conn.cursor())

    def raw_ceiling(self, seconds: float) -> float:
        """Cycles/s of a bare sqlite3 loop: the least a claim→complete can cost on this file."""
        conn = self._connect()
        claim_sql = (
            "UPDATE tasks SET status = 'in_progress', worker_id = ?, lease_expires_at = ?, "
            "claim_token = claim_token + 1, started_at = ?, updated_at = ? "
            "WHERE id = (SELECT id FROM tasks WHERE status = 'pending' AND lane = ? "
            "ORDER BY priority DESC, created_at, id LIMIT 1) AND status = 'pending' "
            "RETURNING id, claim_token"
        )
        history_sql = (
            "INSERT INTO task_history (task_id, from_status, to_status, actor, note, created_at) "
            "VALUES (?, 'pending', 'in_progress', ?, ?, ?)"
        )
        complete_sql = (
            "UPDATE tasks SET status = 'completed', finished_at = ?, lease_expires_at = NULL, "
            "updated_at = ? WHERE id = ? AND status = 'in_progress' AND claim_token = ?"
        )
        cycles = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            now = datetime.now(UTC)
            stamp = _stamp(now)
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                claim_sql, ("@raw", _stamp(now + timedelta(minutes=2)), stamp, stamp, LANE)
            ).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                break
            conn.execute(history_sql, (row[0], "worker:@raw", "claimed by @raw", stamp))
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(complete_sql, (stamp, stamp, row[0], row[1]))
            conn.execute("COMMIT")
            cycles += 1
        elapsed = time.perf_counter() - started
        conn.close()
        return cycles / elapsed

    def close(self) -> None:
        pass


class PostgresTarget:
    """A scratch database on the server, created here and dropped at the end."""

    name = "PostgreSQL"

    def __init__(self, admin_url: str, scratch: Path) -> None:
        import psycopg

        self.psycopg = psycopg
        self.admin_url = admin_url
        self.dbname = f"vibe_bench_{os.getpid()}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self.url = admin_url.rsplit("/", 1)[0] + "/" + self.dbname
        _migrate(self.url, scratch)

    def reset(self, *, pending: int, finished: int, workers: int) -> None:
        now = datetime.now(UTC)
        with self.psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE tasks, task_history, task_runs RESTART IDENTITY CASCADE")
            conn.execute("DELETE FROM worker_health WHERE worker_id LIKE '@bench-%'")
            if finished:
                conn.execute(
                    "INSERT INTO tasks (goal, lane, status, priority, pipeline, worker_id, "
                    "created_at, updated_at, started_at, finished_at) "
                    "SELECT 'finished ' || n, %s, 'completed', 50, 'none', '@bench-1', "
                    "%s, %s, %s, %s FROM generate_series(1, %s) AS n",
                    [LANE] + [now - timedelta(days=30)] * 4 + [finished],
                )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO tasks (goal, lane, status, priority, pipeline, created_at, "
                    "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [row[:5] + (now, now) for row in _pending_rows(pending, now)],
                )
                cur.executemany(
                    "INSERT INTO worker_health (worker_id, lane, tier, capacity_limit, status, "
                    "priority_score, active_tasks) VALUES (%s, %s, 'senior', 1, 'online', 50, 0)",
                    [(f"@bench-{n}", LANE) for n in range(1, workers + 1)],
                )
            conn.execute("VACUUM ANALYZE tasks")

    def double_claims(self) -> int:
        with self.psycopg.connect(self.url) as conn, conn.cursor() as cur:
            return _count_double_claims(cur)

    def close(self) -> None:
        with self.psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


def _count_double_claims(cursor) -> int:
    cursor.execute(
        "SELECT COUNT(*) FROM (SELECT task_id FROM task_history "
        "WHERE from_status = 'pending' AND to_status = 'in_progress' "
        "GROUP BY task_id HAVING COUNT(*) > 1) AS doubled"
    )
    return int(cursor.fetchone()[0])


# --- Worker processes ---------------------------------------------------------------------------


@dataclass
class Measurement:
    cycles: int
    seconds: float
    double_claims: int
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0


def run_workers(target, *, workers: int, seconds: float, pending: int, finished: int = 0):
    """Start `workers` processes on a reset database; return their combined cycles per second."""
    target.reset(pending=pending, finished=finished, workers=workers)
    start_at = time.time() + 1.5 + 0.3 * workers  # after every child has set up and warmed up
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                f"@bench-{n}",
                "--start-at",
                repr(start_at),
                "--seconds",
                repr(seconds),
            ],
            env=_env(target.url, Path(tempfile.gettempdir())),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for n in range(1, workers + 1)
    ]
    reports, errors = [], []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            errors.append(
                err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
            )
            continue
        report = json.loads(out.strip().splitlines()[-1])
        reports.append(report)
        errors.extend(report["errors"])
    if not reports:
        return Measurement(0, 0.0, target.double_claims(), errors)
    cycles = sum(r["cycles"] for r in reports)
    elapsed = max(r["ended"] for r in reports) - start_at
    if any(r["ran_out"] for r in reports):
        errors.append(f"ran out of pending tasks; raise --tasks above {pending}")
    return Measurement(cycles, elapsed, target.double_claims(), errors)


def child_main(worker_id: str, start_at: float, seconds: float) -> None:
    """One worker process: warm up, wait for the common start, then claim→complete in a loop."""
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    from tasks_app import lifecycle

    errors: list[str] = []

    def cycle() -> bool:
        task = lifecycle.claim_next(worker_id)
        if task is None:
            return False
        lifecycle.complete(task.pk, worker_id=worker_id, token=task.claim_token)
        return True

    for _ in range(WARMUP_CYCLES):
        cycle()
    time.sleep(max(0.0, start_at - time.time()))
    cycles, ran_out = 0, False
    deadline = start_at + seconds
    while time.time() < deadline:
        try:
            if not cycle():
                ran_out = True
                break
        except Exception as exc:  # report, don't hide: "database is locked" must show here
            errors.append(f"{type(exc).__name__}: {exc}")
            if len(errors) > 20:
                break
            continue
        cycles += 1
    print(
        json.dumps({"cycles": cycles, "ended": time.time(), "ran_out": ran_out, "errors": errors})
    )


# --- Report -------------------------------------------------------------------------------------


def _line(label: str, m: Measurement, extra: str = "") -> None:
    errors = f"  ERRORS: {m.errors[:3]}" if m.errors else ""
    print(
        f"  {label:<34} {m.rate:>9,.0f} cycles/s  ({m.cycles:,} in {m.seconds:.1f}s, "
        f"double claims: {m.double_claims}){extra}{errors}",
        flush=True,
    )


def bench_target(target, args, raw_rate: float | None) -> list[tuple[str, bool]]:
    print(f"\n{target.name}", flush=True)
    goals = []
    rates: dict[int, Measurement] = {}
    for workers in args.workers:
        rates[workers] = m = run_workers(
            target, workers=workers, seconds=args.seconds, pending=args.tasks
        )
        extra = ""
        if raw_rate:
            extra = f"  = {m.rate / raw_rate:.0%} of raw sqlite3"
        _line(f"{workers} worker process{'es' if workers > 1 else ''}", m, extra)
        goals.append(
            (f"{target.name}: zero double claims, {workers} workers", m.double_claims == 0)
        )
        goals.append((f"{target.name}: no errors, {workers} workers", not m.errors))
    one = rates.get(1)
    if raw_rate and one:
        goals.append((f"{target.name}: 1 worker >= 20% of raw ceiling", one.rate >= 0.2 * raw_rate))
    if one and 4 in rates:
        ratio = rates[4].rate / one.rate if one.rate else 0
        print(f"  4 workers / 1 worker: {ratio:.2f}x", flush=True)
        goals.append((f"{target.name}: 4 workers >= 0.9x of 1", ratio >= 0.9))
    if not args.skip_million and one:
        print(f"  inserting {FINISHED_ROWS:,} finished tasks …", flush=True)
        m = run_workers(
            target, workers=1, seconds=args.seconds, pending=args.tasks, finished=FINISHED_ROWS
        )
        ratio = m.rate / one.rate if one.rate else 0
        _line("1 worker, 1,000,000 finished tasks", m, f"  = {ratio:.2f}x of empty")
        goals.append((f"{target.name}: 1M finished >= 0.8x of empty", ratio >= 0.8))
        goals.append((f"{target.name}: zero double claims, 1M finished", m.double_claims == 0))
    return goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument(
        "--workers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 4],
        help="worker process counts, comma-separated (default 1,2,4)",
    )
    parser.add_argument("--tasks", type=int, default=60_000, help="pending tasks per measurement")
    parser.add_argument("--skip-million", action="store_true", help="skip the 1M-row run")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--pg-url", default=os.environ.get("VIBE_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--child", metavar="WORKER_ID", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.start_at, args.seconds)
        return 0
    if args.seconds <= 0 or args.tasks <= 0 or not args.workers or min(args.workers) < 1:
        parser.error("--seconds, --tasks and --workers must be positive")

    print(f"claim→complete, no-op agent, {args.seconds:g}s per measurement, lane {LANE}")
    goals: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="vibe-bench-") as tmp:
        scratch = Path(tmp)
        raw_rate = None
        if not args.skip_sqlite:
            target = SqliteTarget(scratch)
            target.reset(pending=args.tasks, finished=0, workers=0)
            raw_rate = target.raw_ceiling(args.seconds)
            print(f"\nraw sqlite3 ceiling (same file, schema, pragmas): {raw_rate:,.0f} cycles/s")
            goals += bench_target(target, args, raw_rate)
        if not args.skip_postgres:
            try:
                target = PostgresTarget(args.pg_url, scratch)
            except Exception as exc:
                print(f"\nPostgreSQL skipped: {type(exc).__name__}: {exc}".rstrip())
            else:
                try:
                    goals += bench_target(target, args, None)
                finally:
                    target.close()

    print("\ngoals")
    for label, ok in goals:
        print(f"  [{'ok' if ok else 'MISSED'}] {label}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
