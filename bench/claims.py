"""Claim→complete throughput of the lifecycle, against the raw SQLite ceiling.

Run from the repository root:

    .venv/bin/python bench/claims.py                 # SQLite and PostgreSQL, about 4 minutes
    .venv/bin/python bench/claims.py --seconds 2 --repeat 1 --skip-million --skip-postgres

Each worker process claims and completes tasks as `runworker` does — `claim_next`, then
`complete_and_claim` for as long as there is work — with a no-op agent (no subprocess), so the
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

    def _template_with(self, finished: int) -> Path:
        """The migrated template, plus `finished` completed tasks (built once, then copied)."""
        if finished == 0:
            return self.template
        path = self.scratch / f"template-{finished}.db"
        if not path.exists():
            shutil.copyfile(self.template, path)
            conn = sqlite3.connect(path, isolation_level=None)
            old = _stamp(datetime.now(UTC) - timedelta(days=30))
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO tasks (goal, lane, status, priority, pipeline, worker_id, "
                "created_at, updated_at, started_at, finished_at) "
                "VALUES (?, ?, 'completed', 50, 'none', '@bench-1', ?, ?, ?, ?)",
                ((f"finished {n}", LANE, old, old, old, old) for n in range(finished)),
            )
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        return path

    def reset(self, *, pending: int, finished: int, workers: int) -> None:
        template = self._template_with(finished)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template, self.path)
        conn = self._connect()
        now = datetime.now(UTC)
        conn.execute("BEGIN")
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
            "INSERT INTO task_history "
            "(task_id, from_status, to_status, actor, note, event, error_type, created_at) "
            "VALUES (?, 'pending', 'in_progress', ?, ?, 'claimed', '', ?)"
        )
        complete_sql = (
            "UPDATE tasks SET status = 'completed', finished_at = ?, lease_expires_at = NULL, "
            "updated_at = ? WHERE id = ? AND status = 'in_progress' AND claim_token = ?"
        )
        # One transaction per task, the shape the workers use: complete the task in hand and
        # claim the next one together.
        cycles = 0
        held = None
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            now = datetime.now(UTC)
            stamp = _stamp(now)
            conn.execute("BEGIN IMMEDIATE")
            if held is not None:
                conn.execute(complete_sql, (stamp, stamp, *held))
                cycles += 1
            held = conn.execute(
                claim_sql, ("@raw", _stamp(now + timedelta(minutes=2)), stamp, stamp, LANE)
            ).fetchone()
            if held is not None:
                conn.execute(history_sql, (held[0], "worker:@raw", "claimed by @raw", stamp))
            conn.execute("COMMIT")
            if held is None:
                break
        elapsed = time.perf_counter() - started
        conn.close()
        return cycles / elapsed

    def close(self) -> None:
        pass


class PostgresTarget:
    """A scratch database on the server, created here and dropped at the end."""

    name = "PostgreSQL"

    def __init__(self, admin_url: str, scratch: Path, *, template: str = "") -> None:
        import psycopg

        self.psycopg = psycopg
        self.admin_url = admin_url
        self.dbname = f"vibe_bench_{os.getpid()}" + ("_million" if template else "")
        self.finished = 0
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')
            if template:  # a copy of the migrated database, without migrating again
                conn.execute(f'CREATE DATABASE "{self.dbname}" TEMPLATE "{template}"')
            else:
                conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self.url = admin_url.rsplit("/", 1)[0] + "/" + self.dbname
        if not template:
            _migrate(self.url, scratch)

    def reset(self, *, pending: int, finished: int, workers: int) -> None:
        now = datetime.now(UTC)
        with self.psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE task_history, task_runs, task_run_events")
            if finished and finished == self.finished:
                conn.execute("DELETE FROM tasks WHERE id > %s", [finished])
            else:
                conn.execute("TRUNCATE tasks RESTART IDENTITY CASCADE")
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO worker_health (worker_id, lane, tier, capacity_limit, status, "
                    "priority_score, active_tasks) VALUES (%s, %s, 'senior', 1, 'online', 50, 0) "
                    "ON CONFLICT (worker_id) DO UPDATE SET active_tasks = 0",
                    [(f"@bench-{n}", LANE) for n in range(1, max(workers, 1) + 1)],
                )
            if finished and finished != self.finished:
                conn.execute(
                    "INSERT INTO tasks (goal, lane, status, priority, pipeline, worker_id, "
                    "created_at, updated_at, started_at, finished_at) "
                    "SELECT 'finished ' || n, %s, 'completed', 50, 'none', '@bench-1', "
                    "%s, %s, %s, %s FROM generate_series(1, %s) AS n",
                    [LANE] + [now - timedelta(days=30)] * 4 + [finished],
                )
            self.finished = finished
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO tasks (goal, lane, status, priority, pipeline, created_at, "
                    "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [row[:5] + (now, now) for row in _pending_rows(pending, now)],
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
    rounds: tuple[float, ...] = ()

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0


def run_workers(target, *, workers: int, seconds: float, pending: int, finished: int = 0):
    """Start `workers` processes on a reset database; return their combined cycles per second.

    Every child sets up Django and warms up first, says "ready", and waits; the clock starts
    when all are ready and the parent tells them the common deadline.
    """
    target.reset(pending=pending, finished=finished, workers=workers)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", f"@bench-{n}"],
            env=_env(target.url, Path(tempfile.gettempdir())),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for n in range(1, workers + 1)
    ]
    for proc in procs:
        assert proc.stdout is not None  # a pipe, above
        proc.stdout.readline()  # "ready" (or EOF when it died: reported below)
    start = time.time()
    for proc in procs:
        assert proc.stdin is not None  # a pipe, above
        try:
            proc.stdin.write(f"{start + seconds!r}\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
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
    elapsed = max(r["ended"] for r in reports) - start
    if any(r["ran_out"] for r in reports):
        errors.append(f"ran out of pending tasks; raise --tasks above {pending}")
    return Measurement(cycles, elapsed, target.double_claims(), errors)


def child_main(worker_id: str) -> None:
    """One worker process: warm up, wait for the common start, then claim→complete in a loop."""
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    from tasks_app import lifecycle

    errors: list[str] = []
    held = None

    def cycle() -> bool:
        """One task claimed and completed, as runworker does it: a worker that finishes a task
        takes the next one in the same transaction (`complete_and_claim`)."""
        nonlocal held
        if held is None:
            held = lifecycle.claim_next(worker_id)
            if held is None:
                return False
        task, held = held, None
        _, held = lifecycle.complete_and_claim(task.pk, worker_id=worker_id, token=task.claim_token)
        return True

    for _ in range(WARMUP_CYCLES):
        cycle()
    print("ready", flush=True)
    deadline = float(sys.stdin.readline())
    cycles, ran_out = 0, False
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
        f"  {label:<34} {m.rate:>9,.0f} cycles/s  (rounds: "
        f"{', '.join(f'{r:,.0f}' for r in m.rounds)}; double claims: {m.double_claims})"
        f"{extra}{errors}",
        flush=True,
    )


def _best(runs: list[Measurement]) -> Measurement:
    """The fastest run (others were slowed by whatever else the machine did), with the double
    claims and errors of every run."""
    best = max(runs, key=lambda m: m.rate)
    return Measurement(
        best.cycles,
        best.seconds,
        sum(m.double_claims for m in runs),
        [e for m in runs for e in m.errors],
        tuple(m.rate for m in runs),
    )


def bench_target(target, args, *, with_raw: bool, million_target=None) -> list[tuple[str, bool]]:
    """Rounds of every measurement in turn, so a busy spell on the machine hits them all."""
    print(f"\n{target.name}  (best of {args.repeat} interleaved rounds)", flush=True)
    raw_rates, runs = _rounds(target, args, with_raw=with_raw, million_target=million_target)
    raw = max(raw_rates) if raw_rates else None
    if raw:
        rounds = ", ".join(f"{r:,.0f}" for r in raw_rates)
        print(
            f"  {'raw sqlite3 ceiling (same schema)':<34} {raw:>9,.0f} cycles/s  (rounds: {rounds})"
        )
    return _goals(target.name, args.workers, {key: _best(ms) for key, ms in runs.items()}, raw)


def _rounds(
    target, args, *, with_raw: bool, million_target
) -> tuple[list[float], dict[str, list[Measurement]]]:
    """The raw ceiling's rates, and each setup's measurements ("1", "4", … workers; "1M")."""
    raw_rates: list[float] = []
    runs: dict[str, list[Measurement]] = {}
    million = million_target is not None and 1 in args.workers
    if million:
        print(f"  building a table with {FINISHED_ROWS:,} finished tasks …", flush=True)
        million_target.reset(pending=0, finished=FINISHED_ROWS, workers=0)
    for _ in range(args.repeat):
        if with_raw:
            target.reset(pending=args.tasks, finished=0, workers=0)
            raw_rates.append(target.raw_ceiling(args.seconds))
        for workers in args.workers:
            runs.setdefault(str(workers), []).append(
                run_workers(target, workers=workers, seconds=args.seconds, pending=args.tasks)
            )
        if million:
            runs.setdefault("1M", []).append(
                run_workers(
                    million_target,
                    workers=1,
                    seconds=args.seconds,
                    pending=args.tasks,
                    finished=FINISHED_ROWS,
                )
            )
    return raw_rates, runs


def _goals(
    name: str, worker_counts: list[int], best: dict[str, Measurement], raw: float | None
) -> list[tuple[str, bool]]:
    """Print each setup's best round; return the goals with whether each was met."""
    goals = []
    for workers in worker_counts:
        m = best[str(workers)]
        extra = f"  = {m.rate / raw:.0%} of raw sqlite3" if raw else ""
        _line(f"{workers} worker process{'es' if workers > 1 else ''}", m, extra)
        goals.append((f"{name}: zero double claims, {workers} worker(s)", not m.double_claims))
        goals.append((f"{name}: no errors, {workers} worker(s)", not m.errors))
    one = best.get("1")
    if raw and one:
        goals.append((f"{name}: 1 worker >= 20% of raw ceiling", one.rate >= 0.2 * raw))
    if one and "4" in best:
        ratio = best["4"].rate / one.rate if one.rate else 0
        print(f"  4 workers / 1 worker: {ratio:.2f}x", flush=True)
        goals.append((f"{name}: 4 workers >= 0.9x of 1", ratio >= 0.9))
    if "1M" in best and one:
        m = best["1M"]
        ratio = m.rate / one.rate if one.rate else 0
        _line("1 worker, 1,000,000 finished tasks", m, f"  = {ratio:.2f}x of empty")
        goals.append((f"{name}: 1M finished >= 0.8x of empty", ratio >= 0.8))
        goals.append((f"{name}: zero double claims, 1M finished", not m.double_claims))
    return goals


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,2,4") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("worker counts must be at least 1")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=[1, 2, 4],
        help="worker process counts, comma-separated (default 1,2,4)",
    )
    parser.add_argument("--tasks", type=int, default=20_000, help="pending tasks per measurement")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; the best of each measurement is kept"
    )
    parser.add_argument("--skip-million", action="store_true", help="skip the 1M-row run")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--pg-url", default=os.environ.get("VIBE_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--child", metavar="WORKER_ID", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return 0
    if (
        args.seconds <= 0
        or args.tasks <= 0
        or args.repeat < 1
        or not args.workers
        or min(args.workers) < 1
    ):
        parser.error("--seconds, --tasks, --repeat and --workers must be positive")

    print(f"claim→complete, no-op agent, {args.seconds:g}s per measurement, lane {LANE}")
    goals: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="vibe-bench-") as tmp:
        scratch = Path(tmp)
        if not args.skip_sqlite:
            target = SqliteTarget(scratch)
            million = None if args.skip_million else target  # copies a cached 1M-row template
            goals += bench_target(target, args, with_raw=True, million_target=million)
        if not args.skip_postgres:
            try:
                pg = PostgresTarget(args.pg_url, scratch)
            except Exception as exc:
                print(f"\nPostgreSQL skipped: {type(exc).__name__}: {exc}".rstrip())
            else:
                pg_million = None
                try:
                    if not args.skip_million:
                        pg_million = PostgresTarget(args.pg_url, scratch, template=pg.dbname)
                    goals += bench_target(pg, args, with_raw=False, million_target=pg_million)
                finally:
                    pg.close()
                    if pg_million is not None:
                        pg_million.close()

    print("\ngoals")
    for label, ok in goals:
        print(f"  [{'ok' if ok else 'MISSED'}] {label}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
