"""SQLite's side of the database: pragmas read back, the writers' queue, WAL checkpoints.

The pragmas come from `init_command`; a read-back on every new connection catches a file
system that silently refuses WAL (some network mounts do) before workers start failing with
"database is locked".
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction

logger = logging.getLogger(__name__)
EXPECTED_SYNCHRONOUS_NORMAL = 1


_writer_queue = threading.local()


class _Handles(dict):
    """One thread's lock-file handles, closed when the thread ends and its locals go: a server
    that starts a thread per request (runserver) would otherwise leak one per request until it
    ran out of file descriptors."""

    def __del__(self) -> None:
        for fd in self.values():
            if fd is not None:
                with suppress(OSError):  # already closed
                    os.close(fd)


def writer_queue_fd(path: str) -> int | None:
    """This thread's handle on the lock file beside the SQLite database (one per thread, so
    threads of one process queue like processes do)."""
    handles = _writer_queue.__dict__.setdefault("handles", _Handles())
    if _writer_queue.__dict__.setdefault("pid", os.getpid()) != os.getpid():
        # A forked child shares its parent's open file, and with it the parent's lock: reopen.
        for fd in handles.values():
            if fd is not None:
                os.close(fd)  # the parent keeps its own handle, and its lock
        handles.clear()
        _writer_queue.pid = os.getpid()
    if path not in handles:
        try:
            handles[path] = os.open(f"{path}-writers", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            handles[path] = None  # read-only folder: fall back to SQLite's busy timeout alone
    return handles[path]


@contextmanager
def atomic() -> Iterator[None]:
    """`transaction.atomic()`, with SQLite writers waiting in a queue rather than asleep.

    SQLite lets one writer in at a time and makes the others retry after growing sleeps, so
    with several busy workers the lock often sits free while every waiter sleeps (four workers
    ran at 0.28× the rate of one in bench/claims.py). An exclusive `flock` on a file beside
    the database makes our writers wait in the kernel, which hands the lock to the next one at
    once. It is only a queue: correctness still rests on SQLite's own lock, so writers that do
    not take it (the admin, an outer transaction) are merely slower, never unsafe. Inside an
    outer atomic block the transaction, and SQLite's write lock, already started, so waiting
    here could only deadlock; the queue is skipped.
    """
    conn = transaction.get_connection()
    name = str(conn.settings_dict.get("NAME") or "")
    if (
        fcntl is None
        or conn.vendor != "sqlite"
        or conn.in_atomic_block
        or conn.is_in_memory_db()
        or not name
    ):
        with transaction.atomic():
            yield
        return
    fd = writer_queue_fd(name)
    if fd is None:
        with transaction.atomic():
            yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with transaction.atomic():
            yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    _checkpoint_now_and_then(conn)


def _checkpoint_now_and_then(conn) -> None:
    """Fold the WAL back into the database every CHECKPOINT_EVERY commits, outside the queue.

    SQLite's own automatic checkpoint runs inside the committing transaction, so it would hold
    the writers' queue through its fsyncs (half of all time spent in the queue on a slow disk).
    A PASSIVE checkpoint needs no write lock: run here, after the queue has moved on, it lets
    the other writers carry on. `wal_autocheckpoint` stays set, higher, as a safety net for
    writes that do not come through the lifecycle.
    """
    commits = _writer_queue.__dict__.get("commits", 0) + 1
    if commits < settings.VIBE_SQLITE_CHECKPOINT_EVERY:
        _writer_queue.commits = commits
        return
    _writer_queue.commits = 0
    try:
        with conn.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.fetchall()
    except DatabaseError as exc:
        # The move has committed: its caller must not hear of a failure. The next checkpoint
        # (or SQLite's own) folds in what this one could not.
        logger.warning("WAL checkpoint skipped: %s", exc)


def read_pragmas(connection) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
        cursor.execute("PRAGMA busy_timeout")
        busy_timeout = cursor.fetchone()[0]
    return {"journal_mode": journal_mode, "synchronous": synchronous, "busy_timeout": busy_timeout}


def check_pragmas(sender, connection, **kwargs) -> None:
    if connection.vendor != "sqlite" or connection.settings_dict["NAME"] == ":memory:":
        return
    if "mode=memory" in str(connection.settings_dict["NAME"]):
        return
    pragmas = read_pragmas(connection)
    problems = []
    if str(pragmas["journal_mode"]).lower() != "wal":
        problems.append(f"journal_mode is {pragmas['journal_mode']}, not wal")
    if pragmas["synchronous"] != EXPECTED_SYNCHRONOUS_NORMAL:
        problems.append(f"synchronous is {pragmas['synchronous']}, not NORMAL (1)")
    if pragmas["busy_timeout"] < min(settings.SQLITE_BUSY_TIMEOUT_MS, 5000):
        problems.append(f"busy_timeout is {pragmas['busy_timeout']} ms")
    if problems:
        raise ImproperlyConfigured(
            f"SQLite database {connection.settings_dict['NAME']} did not take its settings: "
            + "; ".join(problems)
        )
