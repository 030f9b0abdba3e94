"""What preparing a task's worktree costs, and whether it stalls the worker's other tasks.

Run from the repository root:

    .venv/bin/python bench/worktree.py                 # a generated 20,000-file repository
    .venv/bin/python bench/worktree.py --files 5000 --repeat 3

On a throwaway SQLite file and a generated repository it prints:

1. the time `workspace.prepare(task)` takes for a new task, as a ratio to a bare
   `git worktree add` of the same repository (goal ≤ 1.3×), the median of `--repeat` rounds;
2. the same with `VIBE_WORKTREE_SETUP=true`: what running a (trivial) setup command adds;
3. the longest gap between lease renewals of a running task while a real `runworker` prepares
   another task's worktree (goal ≤ the heartbeat period + 1 s), and again while that worktree's
   `VIBE_WORKTREE_SETUP` sleeps past the lease.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RATIO_GOAL = 1.3
LEASE_SECONDS = 6  # heartbeats every third of it
# Sleeps past the lease, only in the second task's worktree (its branch is named from its goal).
SLOW_SETUP = 'case "$(git rev-parse --abbrev-ref HEAD)" in *needs-a-new-worktree*) sleep 8;; esac'


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repository(path: Path, files: int) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for n in range(files):
        folder = path / f"pkg{n % 200:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"module_{n}.py").write_text(f"VALUE_{n} = {n}\n" * 20)
    git(path, "add", "-A")
    git(path, "-c", "user.name=B", "-c", "user.email=b@example.com", "commit", "-q", "-m", "all")


def _setup_django(scratch: Path, repo: Path) -> None:
    os.environ.update(
        DATABASE_URL=f"sqlite:///{scratch / 'bench.db'}",
        DJANGO_SETTINGS_MODULE="vibe_project.settings",
        VIBE_VAR_DIR=str(scratch / "var"),
        VIBE_WORKSPACE=str(repo),
        VIBE_WORKTREES_DIR=str(scratch / "trees"),
        VIBE_LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def bare_worktree_add(repo: Path, scratch: Path, n: int) -> float:
    target = scratch / f"bare-{n}"
    started = time.perf_counter()
    git(repo, "worktree", "add", "-q", "-b", f"bench-bare-{n}", str(target), "HEAD")
    return time.perf_counter() - started


def factory_prepare(n: int, setup: str = "") -> float:
    from django.conf import settings

    from tasks_app import lifecycle
    from workers_app import workspace

    settings.VIBE_WORKTREE_SETUP = setup
    task = lifecycle.submit(f"Bench task {n}", lane="backend", pipeline="none", actor="cli")
    started = time.perf_counter()
    workspace.prepare(task)
    took = time.perf_counter() - started
    lifecycle.cancel(task.pk, actor="cli")  # never claimed by the worker of heartbeat_gap
    return took


def heartbeat_gap(scratch: Path, setup: str = "") -> tuple[float, float]:
    """The longest gap between lease renewals of a running task while another is prepared."""
    from tasks_app import lifecycle
    from tasks_app.models import Task

    running = lifecycle.submit("Runs a while", lane="backend", pipeline="none", actor="cli")
    agent = f"{sys.executable} -c \"import time; time.sleep(12); open('o.txt','w').write('x')\""
    env = {**os.environ, "VIBE_AGENT_SANDBOX": "off", "VIBE_WORKTREE_SETUP": setup}
    argv = [sys.executable, str(REPO_ROOT / "manage.py"), "runworker", "@bench-1"]
    argv += ["--lane", "backend", "--capacity", "2", "--lease", str(LEASE_SECONDS), "--once"]
    argv += ["--agent-command", agent]
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while Task.objects.get(pk=running.pk).status != "in_progress":
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not start the first task")
            time.sleep(0.05)
        lifecycle.submit("Needs a new worktree", lane="backend", pipeline="none", actor="cli")
        renewals: list[float] = []
        last = None
        while Task.objects.get(pk=running.pk).status == "in_progress":
            lease = Task.objects.get(pk=running.pk).lease_expires_at
            if lease != last:
                renewals.append(time.monotonic())
                last = lease
            time.sleep(0.02)
        worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
    gaps = [b - a for a, b in zip(renewals, renewals[1:], strict=False)]
    return (max(gaps) if gaps else float("inf")), LEASE_SECONDS / 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.files < 1 or args.repeat < 1:
        parser.error("--files and --repeat must be at least 1")
    scratch = Path(tempfile.mkdtemp(prefix="vibe-bench-worktree-"))
    try:
        repo = scratch / "repo"
        print(f"generating a repository of {args.files:,} files …", flush=True)
        make_repository(repo, args.files)
        _setup_django(scratch, repo)
        bare = [bare_worktree_add(repo, scratch, n) for n in range(args.repeat)]
        ours, with_setup = [], []
        for n in range(args.repeat):  # in turn, so both see as many worktrees on the disk
            ours.append(factory_prepare(2 * n))
            with_setup.append(factory_prepare(2 * n + 1, "true"))
        ratio = statistics.median(ours) / statistics.median(bare)
        print(f"bare git worktree add: median {statistics.median(bare) * 1000:.0f} ms")
        print(f"workspace.prepare:     median {statistics.median(ours) * 1000:.0f} ms")
        print(
            f"ratio {ratio:.2f}× (goal ≤ {RATIO_GOAL}×) {'ok' if ratio <= RATIO_GOAL else 'MISSED'}"
        )
        print(
            f"workspace.prepare with VIBE_WORKTREE_SETUP=true: median "
            f"{statistics.median(with_setup) * 1000:.0f} ms"
        )
        for what, setup in (
            ("another worktree is prepared", ""),
            (f"its setup sleeps 8 s (lease {LEASE_SECONDS} s)", SLOW_SETUP),
        ):
            gap, period = heartbeat_gap(scratch, setup)
            goal = period + 1
            print(
                f"longest gap between lease renewals while {what}: "
                f"{gap:.2f} s (heartbeat every {period:.1f} s; goal ≤ {goal:.1f} s) "
                f"{'ok' if gap <= goal else 'MISSED'}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
