"""Dispatch latency: time from `submit` to the claim by an idle worker, p50 and p99.

    python bench/dispatch.py [--tasks 100] [--workers 2] [--idle 5] [--pg-url URL] [--no-pg]

For SQLite (a fresh file in a temporary folder) and PostgreSQL (a scratch database, skipped when
the server is not reachable) it migrates, starts real `runworker` processes with a no-op agent,
lets them sit idle for `--idle` seconds, then submits tasks one at a time at random moments and
reads each latency from the task's history: the claim row's time minus the submit row's time.
Goals (issue 3): SQLite p50 < 100 ms, p99 < 250 ms; PostgreSQL p50 < 20 ms, p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOALS = {"sqlite": (100.0, 250.0), "postgresql": (20.0, 50.0)}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def measure(args: argparse.Namespace) -> None:
    """Child mode: DATABASE_URL names a fresh database; print one result line."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vibe_project.settings")
    sys.path.insert(0, str(REPO))
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from tasks_app import lifecycle
    from tasks_app.choices import Status
    from tasks_app.models import Task, TaskHistory
    from workers_app.models import Worker

    call_command("migrate", verbosity=0)
    Worker.objects.all().delete()
    ids = [f"@bench-{n}" for n in range(1, args.workers + 1)]
    for worker_id in ids:
        Worker.objects.create(worker_id=worker_id, lane="backend", capacity_limit=1)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "manage.py"),
                "runworker",
                worker_id,
                "--agent-command",
                "true",
                "-v",
                "0",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        for worker_id in ids
    ]
    try:
        deadline = time.monotonic() + 60
        while Worker.objects.filter(pid__isnull=True).exists():
            if time.monotonic() > deadline:
                raise SystemExit("workers did not start within 60 s")
            time.sleep(0.1)
        time.sleep(args.idle)  # idle workers: the latency must not grow with idle time
        latencies = []
        for n in range(args.tasks):
            time.sleep(random.uniform(0.02, 0.25))  # land anywhere in the poll cycle
            task = lifecycle.submit(
                f"dispatch probe {n}", lane="backend", actor="cli", pipeline="none"
            )
            wait_until = time.monotonic() + 30
            while not TaskHistory.objects.filter(task=task, to_status=Status.IN_PROGRESS).exists():
                if time.monotonic() > wait_until:
                    raise SystemExit(f"task {task.pk} was not claimed within 30 s")
                time.sleep(0.02)  # the figure comes from timestamps; don't load the CPU
            rows = dict(
                TaskHistory.objects.filter(task=task).values_list("to_status", "created_at")
            )
            latencies.append((rows[Status.IN_PROGRESS] - rows[Status.PENDING]).total_seconds())
        while Task.objects.exclude(status=Status.COMPLETED).exists():
            time.sleep(0.05)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    ms = [v * 1000 for v in latencies]
    vendor = connection.vendor
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    goal50, goal99 = GOALS[vendor]
    verdict = "meets" if p50 < goal50 and p99 < goal99 else "MISSES"
    print(
        f"{vendor:<11} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  mean {statistics.mean(ms):6.1f} ms  "
        f"max {max(ms):7.1f} ms  ({verdict} goal p50<{goal50:g}, p99<{goal99:g})",
        flush=True,
    )


def child(args: argparse.Namespace, url: str, var_dir: str) -> int:
    env = {**os.environ, "DATABASE_URL": url, "VIBE_VAR_DIR": var_dir, "VIBE_LOG_LEVEL": "WARNING"}
    argv = [
        sys.executable,
        __file__,
        "--child",
        "--tasks",
        str(args.tasks),
        "--workers",
        str(args.workers),
        "--idle",
        str(args.idle),
    ]
    return subprocess.run(argv, env=env, check=False).returncode


def postgres_scratch(base_url: str):
    """Create a scratch database next to `base_url`; None (with a note) if unreachable."""
    try:
        import psycopg
    except ImportError:
        print("postgresql  skipped: psycopg is not installed")
        return None, None
    try:
        admin = psycopg.connect(base_url, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure means: skip PostgreSQL
        print(f"postgresql  skipped: {base_url} is not reachable ({exc.__class__.__name__})")
        return None, None
    name = f"vibe_bench_dispatch_{os.getpid()}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = base_url.rsplit("/", 1)[0] + "/" + name
    return admin, (name, url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="samples per database")
    parser.add_argument("--workers", type=int, default=2, help="idle runworker processes")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before measuring")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("VIBE_BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server to make a scratch database on",
    )
    parser.add_argument("--no-pg", action="store_true", help="measure SQLite only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tasks < 1 or args.workers < 1 or args.idle < 0:
        parser.error("--tasks and --workers must be at least 1, --idle at least 0")
    if args.child:
        measure(args)
        return 0
    print(
        f"submit → claim latency: {args.workers} idle worker(s), idle {args.idle:g} s first, "
        f"{args.tasks} tasks per database"
    )
    status = 0
    tmp = tempfile.mkdtemp(prefix="vibe-bench-dispatch-")
    try:
        status |= child(args, f"sqlite:///{tmp}/dispatch.db", tmp)
        if not args.no_pg:
            admin, scratch = postgres_scratch(args.pg_url)
            if scratch:
                name, url = scratch
                try:
                    status |= child(args, url, tmp)
                finally:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    admin.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
