"""`manage.py runfactory`: the web server and the configured pool's workers, stopped together.

The configured pool is the worker rows marked `managed` ("started by runfactory") that are not
retired: the default pool's rows, and rows added in the admin. A row a one-off
`runworker @x-1 --lane …` created is not managed, so it is not started here (the banner names
it); tick it in the admin to make it part of the pool.

This is what `make run` starts after migrating. Children run in their own sessions, so a Ctrl-C
in the terminal reaches only this process, which then drains the workers (SIGTERM: they finish or
release their tasks) and stops the web server, and exits 0. A second Ctrl-C stops everything now.
A worker that dies is restarted after a pause; if the web server dies, everything stops.
A worker that refused to start (its preflight found the agent, key, git identity or sandbox
broken) is not restarted: it would only refuse again. Its one line is repeated, so the person
sees which worker refused and why among the other processes' output.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management import get_commands
from django.core.management.base import BaseCommand, CommandError

from tasks_app import first_login
from workers_app.models import Worker
from workers_app.preflight import REFUSED_MARK
from workers_app.profiles import ProfileError, get_profile, runnable_profile

MANAGE = Path(settings.BASE_DIR) / "manage.py"
RESTART_PAUSE_SECONDS = 5.0
QUICK_EXIT_SECONDS = 10.0  # a child that exits sooner than this after starting "failed quickly"
MAX_QUICK_FAILURES = 3
STOP_GRACE_SECONDS = 30.0
TAIL_LINES = 20


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restart_at: float | None = None
    quick_failures: int = field(default=0)
    started_at: float = 0.0
    given_up: bool = False
    # Workers' stderr is passed through a pipe (to the terminal, unchanged) to keep its tail.
    keep_tail: bool = False
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    _copier: threading.Thread | None = None

    def start(self) -> None:
        self.tail.clear()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE if self.keep_tail else None,
            start_new_session=True,
        )
        if self.keep_tail:
            self._copier = threading.Thread(
                target=self._copy_stderr, args=(self.proc.stderr,), daemon=True
            )
            self._copier.start()
        self.restart_at = None
        self.started_at = time.monotonic()

    def _copy_stderr(self, stream) -> None:
        out = sys.stderr.buffer
        for line in iter(stream.readline, b""):
            self.tail.append(line.decode("utf-8", "replace").rstrip())
            with contextlib.suppress(ValueError, OSError):
                out.write(line)
                out.flush()
        stream.close()

    def refusal(self) -> str:
        """Why the worker refused to start (its preflight's line), or ""."""
        if self._copier is not None:
            self._copier.join(2)  # the pipe's last lines, written just before it exited
        for line in reversed(self.tail):
            if line.startswith("CommandError: ") and REFUSED_MARK in line:
                return line.removeprefix("CommandError: ").strip()
        return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_status(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)


def worker_children(workers: list[Worker], python: str, agent: str | None, default_name: str):
    """One runworker child per row of the configured pool, with the agent each row runs."""
    return [
        Child(
            row.worker_id,
            [
                python,
                str(MANAGE),
                "runworker",
                row.worker_id,
                "--agent",
                agent or runnable_profile(row.agent_profile) or default_name,
            ],
            keep_tail=True,
        )
        for row in workers
    ]


class Command(BaseCommand):
    help = (
        "Start the web server and a runworker per worker of the configured pool (rows marked "
        "managed, not retired); Ctrl-C stops them all cleanly."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Web server address.")
        parser.add_argument("--port", type=int, default=8000, help="Web server port.")
        parser.add_argument(
            "--agent",
            help="Agent profile for every worker (default: each row's profile, else "
            "VIBE_DEFAULT_AGENT, which is the simulated agent).",
        )
        parser.add_argument("--no-web", action="store_true", help="Start only the workers.")

    def handle(self, *args, host: str, port: int, agent: str | None, no_web: bool, **opts):
        if not 0 < port < 65536:
            raise CommandError(f"--port {port} is not a TCP port")
        try:
            default_profile = get_profile(agent or settings.VIBE_DEFAULT_AGENT)
        except ProfileError as exc:
            raise CommandError(str(exc)) from None
        python = sys.executable
        children: list[Child] = []
        if not no_web:
            children.append(
                Child("web", [python, str(MANAGE), "runserver", f"{host}:{port}", "--noreload"])
            )
        workers = list(Worker.objects.configured_pool().order_by("lane", "worker_id"))
        children += worker_children(workers, python, agent, default_profile.name)
        if "sendnotifications" in get_commands():
            children.append(Child("notifications", [python, str(MANAGE), "sendnotifications"]))
        if settings.VIBE_GITHUB_TOKEN and "syncgithub" in get_commands():
            # Opens pull requests and sends issue comments; polls when VIBE_GITHUB_POLL_SECONDS.
            children.append(Child("github", [python, str(MANAGE), "syncgithub"]))
        if settings.VIBE_SLACK_APP_TOKEN and "slacksocket" in get_commands():
            # /vibe and its buttons over Slack's Socket Mode: no public URL needed.
            children.append(Child("slack", [python, str(MANAGE), "slacksocket"]))

        self.stopping = False
        self.forced = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for child in children:
            child.start()
        self._banner(host, port, no_web, workers, agent, default_profile.name)
        self._not_started()
        failure = self._supervise(children)
        self._stop(children)
        if failure:
            raise CommandError(failure)
        self.stdout.write("Vibe Factory stopped.")

    def _not_started(self) -> None:
        """Name the rows left out of the pool, so a missing worker is never a mystery."""
        one_offs = list(
            Worker.objects.in_pool()
            .filter(managed=False)
            .order_by("worker_id")
            .values_list("worker_id", flat=True)[:11]
        )
        if one_offs:
            names = ", ".join(one_offs[:10]) + (" …" if len(one_offs) > 10 else "")
            self.stdout.write(
                f"  not started (one-off runworker rows, not in the pool): {names}; tick "
                '"started by runfactory" in the admin to add one, or retire it'
            )

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:
            self.forced = True
        self.stopping = True

    def _banner(self, host, port, no_web, workers, agent, default_name) -> None:
        login = first_login.still_valid() if not no_web else None
        if not no_web:
            shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
            self.stdout.write(
                self.style.SUCCESS(f"Vibe Factory is running at http://{shown}:{port}/")
            )
            if login is None:
                self.stdout.write(
                    "Log in with your admin login; forgot it? python manage.py changepassword admin"
                )
        if not workers:
            self.stdout.write(
                "No workers are in the pool; add one in the admin (Workers → Add), or run a "
                "one-off with: manage.py runworker @x-1 --lane backend"
            )
        for row in workers:
            profile = agent or runnable_profile(row.agent_profile) or default_name
            note = " (SIMULATED agent: no model is called)" if profile == "simulated" else ""
            self.stdout.write(f"  worker {row.worker_id}: {row.lane} lane, {profile} agent{note}")
        self.stdout.write("Press Ctrl-C to stop everything.")
        if login:
            # Last, so it is on screen when the banner ends rather than scrolled away above.
            self.stdout.write(
                self.style.SUCCESS(f"First login: {login[0]} / {login[1]}")
                + f" (also in {first_login.path()}, until the password is changed)"
            )

    def _supervise(self, children: list[Child]) -> str:
        while not self.stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for child in children:
                if child.alive() or child.given_up:
                    continue
                if child.name == "web":
                    return (
                        f"the web server exited with status {child.exit_status}; "
                        "is the port in use? Try --port"
                    )
                if child.restart_at is None:
                    refusal = child.refusal()
                    if refusal:
                        # Restarting cannot fix a missing agent or key; say so once, plainly.
                        child.given_up = True
                        self.stderr.write(
                            self.style.ERROR(f"worker {refusal}")
                            + "\nNot restarting it; fix that, then restart runfactory."
                        )
                        continue
                    quick = now - child.started_at < QUICK_EXIT_SECONDS
                    child.quick_failures = child.quick_failures + 1 if quick else 0
                    if child.quick_failures >= MAX_QUICK_FAILURES:
                        # A worker that cannot even start (a broken profile, a deleted row)
                        # would only fill the terminal; its own message above says why.
                        child.given_up = True
                        self.stderr.write(
                            f"{child.name} failed {child.quick_failures} times right after "
                            "starting; not restarting it (see its message above)"
                        )
                        continue
                    child.restart_at = now + RESTART_PAUSE_SECONDS
                    self.stderr.write(
                        f"{child.name} exited with status {child.exit_status}; restarting "
                        f"in {RESTART_PAUSE_SECONDS:g}s"
                    )
                elif now >= child.restart_at and not self.stopping:
                    child.start()
        return ""

    def _stop(self, children: list[Child]) -> None:
        self.stdout.write("Stopping: workers finish or release their tasks …")
        for child in children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(c.alive() for c in children) and time.monotonic() < deadline:
            if self.forced:
                for child in children:
                    child.signal(signal.SIGTERM)  # a second SIGTERM forces a worker
                self.forced = False
                deadline = min(deadline, time.monotonic() + 5)
            time.sleep(0.1)
        for child in children:
            if child.proc is not None and child.alive():
                child.signal(signal.SIGKILL)
                child.proc.wait(5)
