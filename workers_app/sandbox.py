"""Fencing agents off from the control plane: an environment allowlist and a bubblewrap sandbox.

What an agent can reach (`VIBE_AGENT_SANDBOX`):

- **auto** (the default): `bwrap` when bubblewrap is installed and a trial run works on this
  host, otherwise `off` with a warning in the worker's log.
- **bwrap**: every agent runs inside bubblewrap. The whole filesystem is read-only; the agent can
  write only in its worktree, its per-task home folder and a private, empty /tmp (a builder also
  in the git folder of its repository, so it can commit; a reviewer nowhere else). The factory's
  var folder, its SQLite database (and -wal/-shm), its secret key, the agent profiles file,
  PostgreSQL's local socket folders, the credentials in the worker's own home
  (WORKER_HOME_SECRETS, PGPASSFILE) and every path in `VIBE_SANDBOX_HIDE` are hidden: empty
  folders, empty files. The agent sees only its own processes (so not the worker's environment in
  /proc), has no capabilities even when the worker runs as root, and is killed with its worker.
  The network is shared, because agents need their model's API: a database server that trusts
  every local connection (PostgreSQL `trust` on 127.0.0.1) is still reachable, so give the
  factory's database a password. The worker refuses to start when `bwrap` is asked for and does
  not work.
- **off**: agents run as plain subprocesses of the worker. They never get the factory's
  environment (it is an allowlist, see below) and worktrees live outside the var folder, so
  `../../secret_key` finds nothing; but an agent runs as the factory's own user and can still
  open the database or the secret key by their absolute paths. Use it only for agents you
  trust, or run the worker as a user who cannot read the var folder.

In every mode an agent's environment holds only PATH, LANG, LC_*, TERM, TZ, USER, LOGNAME,
SHELL, TMPDIR, the proxy and CA-certificate variables, GIT_AUTHOR_*/GIT_COMMITTER_*, its
provider's variables (ANTHROPIC_*, OPENAI_*, GEMINI_*, GOOGLE_*, …), the names listed in
`VIBE_AGENT_ENV` and the profile's own `env`; never DATABASE_URL, PG*, DJANGO_* or VIBE_*. HOME
is the task's own home folder, not the worker's (whose ~/.pgpass, ~/.ssh and ~/.config the
agent must not read).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

BWRAP = "bwrap"
AUTO, BWRAP_MODE, OFF = "auto", "bwrap", "off"
MODES = (AUTO, BWRAP_MODE, OFF)
TRIAL_TIMEOUT_SECONDS = 20

# The agent's environment is an allowlist: these names, these prefixes, the adapter's own
# prefixes and VIBE_AGENT_ENV. Whatever those say, the control plane's own variables never pass.
ALLOWED_NAMES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "USER",
        "LOGNAME",
        "SHELL",
        "TMPDIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    }
)
ALLOWED_PREFIXES = ("LC_", "GIT_AUTHOR_", "GIT_COMMITTER_")
NEVER_PREFIXES = ("DATABASE_URL", "PG", "DJANGO_", "VIBE_")
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
POSTGRES_SOCKET_DIRS = ("/run/postgresql", "/var/run/postgresql")
# Credentials a worker's own home may hold; hidden from sandboxed agents.
WORKER_HOME_SECRETS = (
    ".pgpass",
    ".ssh",
    ".netrc",
    ".git-credentials",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".config/gh",
    ".config/git/credentials",
    ".claude",
    ".claude.json",
    ".codex",
    ".gemini",
    ".aider.conf.yml",
    ".env",
)


class SandboxError(RuntimeError):
    """The sandbox was asked for and cannot work here; the message says what to fix."""


def _bwrap_program() -> str | None:
    return shutil.which(BWRAP)


def resolve_mode(requested: str | None = None) -> str:
    """The sandbox agents will run in: "bwrap" or "off"."""
    mode = (requested if requested is not None else settings.VIBE_AGENT_SANDBOX).strip().lower()
    if mode not in MODES:
        raise SandboxError(
            f"VIBE_AGENT_SANDBOX={mode!r} is not a sandbox mode; use auto, bwrap or off."
        )
    if mode == OFF:
        return OFF
    reason = trial()
    if reason is None:
        return BWRAP_MODE
    if mode == BWRAP_MODE:
        raise SandboxError(
            f"VIBE_AGENT_SANDBOX=bwrap, but bubblewrap does not work here: {reason}. "
            "Install Debian's 'bubblewrap' package (apt-get install bubblewrap), allow user "
            "namespaces, or set VIBE_AGENT_SANDBOX=off to run agents unsandboxed."
        )
    logger.warning(
        "agents run without a sandbox (%s): an agent running as the factory's own user can "
        "still open the database and the secret key by their absolute paths. Install "
        "bubblewrap or run the worker as a user who cannot read %s.",
        reason,
        settings.VAR_DIR,
    )
    return OFF


def trial() -> str | None:
    """Run `bwrap … true` with a real run's options: None when it works, else why not."""
    program = _bwrap_program()
    if program is None:
        return "the 'bwrap' program is not on PATH"
    return _trial(program, tuple(str(path) for path in protected_paths()))


@functools.lru_cache(maxsize=8)
def _trial(program: str, hidden: tuple[str, ...]) -> str | None:
    with tempfile.TemporaryDirectory(prefix="vibe-sandbox-trial-") as scratch:
        workspace, home = Path(scratch) / "workspace", Path(scratch) / "home"
        workspace.mkdir()
        home.mkdir()
        argv = wrap(["true"], workspace=workspace, home=home, hide=[Path(p) for p in hidden])
        argv[0] = program
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=TRIAL_TIMEOUT_SECONDS, check=False
            )
        except OSError as exc:
            return f"could not run {program}: {exc}"
        except subprocess.TimeoutExpired:
            return f"'{program} … true' did not finish in {TRIAL_TIMEOUT_SECONDS} s"
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", errors="replace").strip()
        return f"'{program} … true' exited {done.returncode}: {stderr or 'no error output'}"
    return None


def protected_paths() -> list[Path]:
    """What an agent must never see: the factory's var folder, database, key and profiles."""
    var_dir = Path(settings.VAR_DIR)
    paths = [var_dir, var_dir / "secret_key", Path(settings.BASE_DIR) / "var"]
    for database in settings.DATABASES.values():
        engine = database.get("ENGINE", "")
        if engine == "django.db.backends.sqlite3":
            names = [database.get("NAME"), (database.get("TEST") or {}).get("NAME")]
            for name in names:
                if name and str(name) != ":memory:" and not str(name).startswith("file:"):
                    base = Path(name)
                    paths.append(base)
                    paths.extend(base.with_name(base.name + side) for side in SQLITE_SIDE_FILES)
        elif engine == "django.db.backends.postgresql":
            # A local socket lets a peer- or trust-authenticated user in without a password,
            # whatever host the factory itself connects to.
            host = str(database.get("HOST") or "")
            paths.extend(Path(p) for p in POSTGRES_SOCKET_DIRS)
            if host.startswith("/"):
                paths.append(Path(host))
    if settings.VIBE_AGENT_PROFILES_FILE:
        paths.append(Path(settings.VIBE_AGENT_PROFILES_FILE))
    # The worker's own credentials in its home folder (the home itself stays readable: agent
    # CLIs and the factory's checkout often live there).
    home = Path(os.path.expanduser("~"))
    paths.extend(home / name for name in WORKER_HOME_SECRETS)
    if os.environ.get("PGPASSFILE"):
        paths.append(Path(os.environ["PGPASSFILE"]))
    paths.extend(Path(raw) for raw in getattr(settings, "VIBE_SANDBOX_HIDE", []))
    unique: dict[Path, None] = {}
    for path in paths:
        unique[_absolute(path)] = None
    return list(unique)


def _absolute(path: Path) -> Path:
    # Resolved, because bubblewrap mounts on the real location: a symlink would lead round it.
    return path.expanduser().resolve()


def wrap(
    argv: list[str],
    *,
    workspace: Path,
    home: Path,
    writable: Sequence[Path] = (),
    network: bool = True,
    readable: Sequence[Path] = (),
    hide: Sequence[Path] | None = None,
    new_session: bool = False,
) -> list[str]:
    """The bubblewrap command line that runs `argv` fenced off (see the module's docstring).

    `writable`: more folders the agent may write (a builder's git common dir, so it can commit).
    `readable`: files or folders it may read although they are hidden (a prompt file in the var
    folder) or under /tmp, which is private and empty: a reviewer's git common dir when the
    repository lives under /tmp. What `argv` itself needs under /tmp is added
    (`needed_under_tmp`). `workspace`, `home` and these must exist.
    `hide`: what to hide instead of `protected_paths()`.
    `new_session`: bubblewrap's --new-session (a fresh session id, against TIOCSTI terminal
    injection). Off by default: the runner already starts the agent in its own session, without
    a controlling terminal, and a new session would take the agent out of the process group the
    runner signals.
    """
    program = _bwrap_program()
    if program is None:
        raise SandboxError(
            "the 'bwrap' program is not on PATH: install Debian's 'bubblewrap' package or set "
            "VIBE_AGENT_SANDBOX=off"
        )
    workspace, home = _absolute(Path(workspace)), _absolute(Path(home))
    binds = [workspace, home, *(_absolute(Path(p)) for p in writable)]
    hidden = [_absolute(Path(p)) for p in (protected_paths() if hide is None else hide)]
    for path in binds:
        if path in hidden:
            raise SandboxError(f"{path} is hidden from agents, so it cannot be their workspace")
    cmd = [
        program,
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    cmd += _mounts(hidden, binds, [*readable, *needed_under_tmp(argv)])
    cmd.extend(
        [
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            # bwrap started by root keeps root's capabilities (mount, umount) unless told.
            "--cap-drop",
            "ALL",
            "--chdir",
            str(workspace),
            "--setenv",
            "HOME",
            str(home),
            "--setenv",
            "TMPDIR",
            "/tmp",
        ]
    )
    if not network:
        cmd.append("--unshare-net")
    if new_session:
        cmd.append("--new-session")
    cmd.append("--")
    cmd.extend(argv)
    return cmd


def _mounts(hidden: list[Path], binds: list[Path], readable: Sequence[Path]) -> list[str]:
    """bubblewrap's mount options: hide, bind back, show read-only (`readable`)."""
    # Mounts in order of depth: a folder hidden first, then a worktree inside it bound back, and
    # a hidden path inside a worktree hidden after the worktree is bound.
    mounts: list[tuple[int, int, list[str]]] = []
    hidden_dirs: list[Path] = []
    for path in hidden:
        if _covered(path, hidden, binds):
            continue
        if path.is_dir():
            mounts.append((len(path.parts), 0, ["--tmpfs", str(path)]))
            hidden_dirs.append(path)
        elif path.exists():
            mounts.append((len(path.parts), 0, ["--ro-bind", "/dev/null", str(path)]))
    for path in binds:
        mounts.append((len(path.parts), 1, ["--bind", str(path), str(path)]))
    # What the agent needs to start but the private /tmp would hide (a checkout under /tmp).
    for path in (_absolute(Path(p)) for p in readable):
        mounts.append((len(path.parts), 2, ["--ro-bind", str(path), str(path)]))
    args = [arg for *_, mount in sorted(mounts, key=lambda item: item[:2]) for arg in mount]
    # Hidden folders are empty tmpfs; read-only too, once the binds inside them are made.
    for path in hidden_dirs:
        args += ["--remount-ro", str(path)]
    return args


def needed_under_tmp(argv: Sequence[str]) -> list[Path]:
    """Folders under /tmp an agent needs to start: the sandbox's /tmp is private and empty.

    A checkout, a virtualenv or an agent CLI installed under /tmp (a CI clone, a test run)
    would otherwise vanish inside the sandbox. Each is shown read-only as its top folder under
    /tmp (e.g. /tmp/ci-clone); hidden paths inside it stay hidden.
    """
    tmp = Path("/tmp")
    candidates = [Path(settings.BASE_DIR), Path(sys.prefix), Path(sys.executable)]
    for item in argv:
        if item.startswith("/") and os.path.exists(item):
            candidates += [Path(item), Path(os.path.realpath(item))]
    found: list[Path] = []
    for path in candidates:
        path = _absolute(path)
        if path.is_relative_to(tmp) and path != tmp:
            top = tmp / path.relative_to(tmp).parts[0]
            if top not in found and top.exists():
                found.append(top)
    return found


def _covered(path: Path, hidden: Sequence[Path], binds: Sequence[Path]) -> bool:
    """True when a hidden folder already hides `path` and no bind inside it shows it again."""
    return any(
        folder != path
        and path.is_relative_to(folder)
        and folder.is_dir()
        and not any(path.is_relative_to(b) and b.is_relative_to(folder) for b in binds)
        for folder in hidden
    )


def agent_env(
    base: Mapping[str, str],
    *,
    prefixes: Sequence[str] = (),
    extra: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> dict[str, str]:
    """The allowlisted part of `base` for an agent, then `extra` on top, and HOME = `home`."""
    names, name_prefixes = set(ALLOWED_NAMES), [*ALLOWED_PREFIXES, *prefixes]
    for name in getattr(settings, "VIBE_AGENT_ENV", []):
        if name.endswith("*"):
            name_prefixes.append(name[:-1])
        else:
            names.add(name)
    prefix_tuple = tuple(p for p in name_prefixes if p)
    env = {
        key: value
        for key, value in base.items()
        if (key in names or key.startswith(prefix_tuple)) and not key.startswith(NEVER_PREFIXES)
    }
    env.update(extra or {})
    if home is not None:
        env["HOME"] = str(home)
    return env
