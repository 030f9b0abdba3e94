"""SQLite connection settings, checked on every new connection.

The pragmas come from `init_command`; a read-back catches a file system that silently refuses
WAL (some network mounts do) before workers start failing with "database is locked".
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

EXPECTED_SYNCHRONOUS_NORMAL = 1


def read_sqlite_pragmas(connection) -> dict[str, object]:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
        cursor.execute("PRAGMA busy_timeout")
        busy_timeout = cursor.fetchone()[0]
    return {"journal_mode": journal_mode, "synchronous": synchronous, "busy_timeout": busy_timeout}


def check_sqlite_pragmas(sender, connection, **kwargs) -> None:
    if connection.vendor != "sqlite" or connection.settings_dict["NAME"] == ":memory:":
        return
    if "mode=memory" in str(connection.settings_dict["NAME"]):
        return
    pragmas = read_sqlite_pragmas(connection)
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
