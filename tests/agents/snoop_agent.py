"""Test agent that tries to reach the control plane, as a prompt-injected agent would.

Prints one JSON object (after a line "snoop agent: report") saying what it found:
- "env": its whole environment;
- "relative": for `../secret_key`, `../../var/vibe_coding.db`, … from its working directory,
  the first bytes of each file it could read;
- "read": the same for each `--read PATH` (absolute paths a snoop might know or guess);
- "sqlite": for each `--sqlite PATH`, the rows of every table, or the error;
- "write": for each `--write DIR`, "ok" when it could create (and then removed) a file there,
  else the error;
- "proc": the pids whose /proc/PID/environ holds `--marker` (the worker's secrets);
- "mount": what umount(2) and a read-write remount of / returned (0 means the sandbox broke);
- "list": for each `--list DIR`, the names in it, or the error;
- "connect": for each `--connect SOCKET`, "ok" when a unix socket there accepted a connection
  (a database server's), else the error.
`--climb NAME` adds NAME to the names tried by relative climbs; `--leave FILE` also writes the
report to FILE (relative to the working directory), which gives a builder a change to commit.
Always exits 0.
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import socket
import sqlite3
import sys
from pathlib import Path

NAMES = ("secret_key", "vibe_coding.db", "var/secret_key", "var/vibe_coding.db")


def peek(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(64).decode("utf-8", errors="replace")
    except OSError:
        return None


def sqlite_rows(path: str) -> dict:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {
            t: [list(map(str, r)) for r in db.execute(f'SELECT * FROM "{t}" LIMIT 5')]
            for t in tables
        }
        db.close()
        return {"rows": rows}
    except sqlite3.Error as exc:
        return {"error": str(exc)}


def try_write(folder: str) -> str:
    path = Path(folder) / f"snoop-{os.getpid()}.txt"
    try:
        path.write_text("snooped\n")
    except OSError as exc:
        return f"error: {exc.strerror}"
    path.unlink()
    return "ok"


def proc_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def list_dir(folder: str) -> list[str] | str:
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        return f"error: {exc.strerror}"


def try_connect(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(path)
        except OSError as exc:
            return f"error: {exc.strerror or exc}"
    return "ok"


def mount_attempts() -> dict:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    results = {}
    target = os.environ.get("HOME", "/")
    results["umount"] = libc.umount2(target.encode(), 2)  # MNT_DETACH
    MS_REMOUNT, MS_BIND = 32, 4096
    results["remount_rw"] = libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--read", action="append", default=[])
    parser.add_argument("--sqlite", action="append", default=[])
    parser.add_argument("--write", action="append", default=[])
    parser.add_argument("--marker", action="append", default=[])
    parser.add_argument("--try-mount", action="store_true")
    parser.add_argument("--list", action="append", default=[])
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--climb", action="append", default=[])
    parser.add_argument("--leave", default="")
    args = parser.parse_args()
    if not sys.stdin.isatty():
        sys.stdin.read()
    relative = {}
    for depth in range(1, 5):
        for name in (*NAMES, *args.climb):
            candidate = "../" * depth + name
            relative[candidate] = peek(Path(candidate))
    report = {
        "env": dict(os.environ),
        "relative": relative,
        "read": {path: peek(Path(path)) for path in args.read},
        "sqlite": {path: sqlite_rows(path) for path in args.sqlite},
        "write": {folder: try_write(folder) for folder in args.write},
        "proc": {marker: proc_with(marker) for marker in args.marker},
        "mount": mount_attempts() if args.try_mount else {},
        "list": {folder: list_dir(folder) for folder in args.list},
        "connect": {path: try_connect(path) for path in args.connect},
    }
    if args.leave:
        Path(args.leave).write_text(json.dumps(report, indent=1) + "\n")
    print("snoop agent: report", flush=True)
    print(json.dumps(report), flush=True)


main()
