"""Agents cannot reach the control plane, proven through real `runworker` processes.

A worker runs the snoop agent (tests/agents/snoop_agent.py, a prompt-injected agent) as the
builder of a pipeline="none" task, in a worktree of a git VIBE_WORKSPACE, with the secrets a
real factory's worker holds in its environment, a var folder laid out like the factory's (a
secret key) and the test database (SQLite or PostgreSQL, whichever the suite runs on). The
agent leaves what it found in a file in its own worktree, which the worker commits: that file
is both the evidence and the change that lets the task complete.

The factory lives under /var/tmp, not pytest's tmp_path: the sandbox gives agents a private,
empty /tmp, so a factory under /tmp would be hidden by accident and prove nothing about what
the sandbox hides on purpose (a real factory lives in /srv or a home folder).

Known limits, documented here and not asserted:
- the network is shared, so a PostgreSQL server that trusts 127.0.0.1 over TCP stays reachable
  from inside the sandbox; the factory's database needs a password;
- with VIBE_AGENT_SANDBOX=off the agent runs as the factory's own user: it opens the database
  and the secret key by their absolute paths, climbs that name the var folder
  (`../../var/secret_key`) reach it, and /proc/<worker>/environ shows the worker's secrets.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from tasks_app import lifecycle
from tasks_app.choices import Status
from tasks_app.models import Run, Task
from tests.conftest import AGENTS_DIR, REPO_ROOT
from workers_app import sandbox
from workers_app.workspace import instance_id

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SNOOP = str(AGENTS_DIR / "snoop_agent.py")
REPORT = "snoop-report.json"
PG_SOCKET_DIR = "/run/postgresql"
PG_SOCKET = f"{PG_SOCKET_DIR}/.s.PGSQL.5432"
SECRETS = {
    "PGPASSWORD": "hunter2",
    "PGHOST": "127.0.0.1",
    "DJANGO_SECRET_KEY": "django-insecure-e2e-7d1f0c9b-key-of-the-factory",
    "VIBE_SLACK_BOT_TOKEN": "xoxb-1234-5678-e2eslacktoken",
    "VIBE_GITHUB_TOKEN": "ghp_e2eGithubTokenOfTheFactory0000",
}
# The VIBE_ variables the worker itself hands its agent.
AGENT_VIBE_NAMES = {
    "VIBE_TASK_ID",
    "VIBE_TASK_LANE",
    "VIBE_TASK_STAGE",
    "VIBE_TASK_ATTEMPT",
    "VIBE_WORKER_ID",
    "VIBE_WORKSPACE_DIR",
    "VIBE_PROMPT_FILE",
}

needs_bwrap = pytest.mark.skipif(
    sandbox.trial() is not None, reason=f"bubblewrap does not work here: {sandbox.trial()}"
)
modes = pytest.mark.parametrize("mode", ["off", pytest.param("bwrap", marks=needs_bwrap)])


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sqlite_database() -> Path | None:
    """The SQLite test database the worker shares with this test, or None on PostgreSQL."""
    if connection.vendor != "sqlite":
        return None
    return Path(connection.settings_dict["NAME"]).resolve()


@dataclass
class Factory:
    root: Path
    repo: Path
    var: Path
    secret_key: Path
    trees: Path
    worker_home: Path

    def env(self, mode: str) -> dict[str, str]:
        return {
            **SECRETS,
            "HOME": str(self.worker_home),
            "VIBE_VAR_DIR": str(self.var),
            "VIBE_WORKSPACE": str(self.repo),
            "VIBE_WORKTREES_DIR": str(self.trees),
            "VIBE_AGENT_SANDBOX": mode,
        }

    def tree(self, task_id: int) -> Path:
        return self.trees / f"{instance_id()}-task-{task_id}"

    def agent_home(self, task_id: int) -> Path:
        return self.trees.parent / f"{self.trees.name}-homes" / f"task-{task_id}"

    def var_listing(self) -> list[str]:
        return sorted(str(p.relative_to(self.var)) for p in self.var.rglob("*"))


@pytest.fixture
def factory():
    root = Path(tempfile.mkdtemp(prefix="vibe-isolation-", dir="/var/tmp")).resolve()
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# Demo\n")
    git(repo, "add", "README.md")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    var = root / "var"
    # What the settings make in a factory's var folder (the worker's own import would, too).
    (var / "staticfiles").mkdir(parents=True)
    secret_key = var / "secret_key"
    secret_key.write_text("factory-secret-key-from-the-var-folder\n")
    secret_key.chmod(0o600)
    worker_home = root / "worker-home"
    worker_home.mkdir()
    pgpass = worker_home / ".pgpass"
    pgpass.write_text(f"127.0.0.1:5432:*:postgres:{SECRETS['PGPASSWORD']}\n")
    pgpass.chmod(0o600)
    yield Factory(root, repo, var, secret_key, root / "trees", worker_home)
    shutil.rmtree(root, ignore_errors=True)


def submit() -> Task:
    return lifecycle.submit("Snoop around", lane="backend", pipeline="none", actor="cli")


def snoop_run(
    fleet, factory: Factory, mode: str, *snoop_args: str, task: Task | None = None
) -> tuple[Task, dict]:
    """One builder run of the snoop agent through `runworker --once`; the task and its report."""
    task = task or submit()
    command = shlex.join([sys.executable, SNOOP, "--leave", REPORT, *snoop_args])
    worker = fleet.start_plain(
        ["@backend-1", "--lane", "backend", "--once", "--agent-command", command],
        env=factory.env(mode),
    )
    code = worker.wait(120)
    assert code == 0, worker.output()
    task = Task.objects.get(pk=task.pk)
    run = Run.objects.get(task=task)
    # Isolation does not stop real work: the report file is the change the worker committed.
    assert task.status == Status.COMPLETED, (task.last_error, worker.output())
    assert (run.sandbox, run.outcome) == (mode, "completed")
    assert "snoop agent: report" in run.stdout_tail
    assert [f["path"] for f in task.result["changed_files"]] == [REPORT]
    tree = factory.tree(task.pk)
    assert git(tree, "status", "--porcelain") == ""
    assert git(tree, "log", "-1", "--format=%H") == task.head_commit
    return task, json.loads((tree / REPORT).read_text())


def climb_names() -> list[str]:
    database = sqlite_database()
    return ["--climb", database.name] if database else []


@modes
def test_agent_environment_holds_no_secret_of_the_worker(fleet, factory, mode):
    task, report = snoop_run(fleet, factory, mode)

    env = report["env"]
    control_plane = [k for k in env if k.startswith(("DATABASE_URL", "PG", "DJANGO_", "VIBE_"))]
    assert set(control_plane) <= AGENT_VIBE_NAMES, control_plane
    assert env["VIBE_TASK_ID"] == str(task.pk)
    assert env["VIBE_WORKSPACE_DIR"] == str(factory.tree(task.pk))
    values = "\n".join(env.values())
    database_url = fleet.env["DATABASE_URL"]
    for secret in [*SECRETS.values(), database_url, factory.secret_key.read_text().strip()]:
        if secret == SECRETS["PGHOST"]:
            continue  # an address, not a secret: its name is what must not pass
        assert secret not in values, secret
    assert env["HOME"] != str(factory.worker_home)
    assert Path(env["HOME"]).resolve() == factory.agent_home(task.pk).resolve()


@modes
def test_relative_climbs_from_the_worktree_find_nothing(fleet, factory, mode):
    """`../secret_key`, `../../vibe_coding.db`, the test database's name, … up to four levels.

    Worktrees live beside the var folder, not in it, so with the sandbox off only the climbs
    that name the var folder (`../../var/secret_key`) reach it; in bwrap none does.
    """
    _task, report = snoop_run(fleet, factory, mode, *climb_names())

    climbs = report["relative"]
    database = sqlite_database()
    if database:
        assert "../../" + database.name in climbs
    assert "../../../secret_key" in climbs and "../../vibe_coding.db" in climbs
    naive = {path: found for path, found in climbs.items() if "var/" not in path}
    assert naive and all(found is None for found in naive.values()), naive
    if mode == "bwrap":
        assert all(found is None for found in climbs.values()), climbs
    else:
        # The known limit of "off": the layout is guessable.
        assert climbs["../../var/secret_key"] == factory.secret_key.read_text()


@needs_bwrap
def test_sandboxed_agent_cannot_open_the_factory_files_nor_write_outside_its_worktree(
    fleet, factory
):
    database = sqlite_database()
    before = {"secret_key": digest(factory.secret_key), "var": factory.var_listing()}
    task = submit()
    targets = {
        str(factory.tree(task.pk)): "ok",
        str(factory.agent_home(task.pk)): "ok",
        str(factory.repo): "error: Read-only file system",
        str(REPO_ROOT): "error: Read-only file system",
        str(factory.var): "error: Read-only file system",
        "/etc": "error: Read-only file system",
    }
    args = [
        *("--read", str(factory.secret_key), "--marker", SECRETS["PGPASSWORD"], "--try-mount"),
        *(a for target in targets for a in ("--write", target)),
    ]
    if database:
        args += ["--read", str(database), "--sqlite", str(database)]

    _task, report = snoop_run(fleet, factory, "bwrap", *args, task=task)

    assert report["read"][str(factory.secret_key)] is None
    assert report["write"] == targets
    assert report["proc"] == {SECRETS["PGPASSWORD"]: []}, "the worker's environ is visible"
    assert report["mount"] == {"umount": -1, "remount_rw": -1}
    if database:
        assert report["read"][str(database)] in (None, ""), "the database file is readable"
        assert "rows" not in report["sqlite"][str(database)], report["sqlite"]
        # The live database changes (the worker writes it, -wal and -shm come and go).
        assert not list(database.parent.glob("snoop-*"))
    assert digest(factory.secret_key) == before["secret_key"]
    assert factory.var_listing() == before["var"]
    assert not list(factory.repo.glob("snoop-*")) and not list(REPO_ROOT.glob("snoop-*"))


@needs_bwrap
@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the socket of a PostgreSQL DB")
def test_sandboxed_agent_cannot_reach_the_postgresql_socket(fleet, factory):
    """The factory talks TCP to 127.0.0.1, but the same server listens on its unix socket,
    where `local … peer`/`trust` lets the factory's OS user in without the password. (TCP to
    127.0.0.1:5432 stays reachable from the sandbox: a known limit, see the module docstring.)
    """
    assert Path(PG_SOCKET).exists(), "no PostgreSQL socket on this host"

    _task, report = snoop_run(
        fleet, factory, "bwrap", "--list", PG_SOCKET_DIR, "--connect", PG_SOCKET
    )

    assert report["list"][PG_SOCKET_DIR] in ([], "error: No such file or directory")
    assert report["connect"][PG_SOCKET] != "ok"


@needs_bwrap
def test_sandboxed_agent_cannot_read_the_workers_own_home(fleet, factory):
    """The worker's home stays readable (CLIs live there), its credentials do not."""
    pgpass = factory.worker_home / ".pgpass"

    _task, report = snoop_run(fleet, factory, "bwrap", "--read", str(pgpass))

    assert report["read"][str(pgpass)] is None, report["read"]
