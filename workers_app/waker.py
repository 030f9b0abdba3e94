"""LISTEN for the lifecycle's NOTIFYs on PostgreSQL, so an idle worker wakes as work arrives."""

from __future__ import annotations

import contextlib
import logging
import time

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections

from tasks_app import lifecycle

logger = logging.getLogger(__name__)


class Waker:
    """LISTEN on one of the lifecycle's channels over a dedicated psycopg connection.

    The wake channel (the default) announces claimable work by lane; the keeper listens on the
    cancel channel for the ids of cancelled tasks. Django's connection is not used: it may be
    closed between requests-worth of work, and LISTEN only lasts as long as its session. Any
    failure falls back to plain polling, and the listener reconnects on a later wait.
    """

    RECONNECT_SECONDS = 5.0

    def __init__(
        self,
        lane: str = "",
        *,
        channel: str = lifecycle.WAKE_CHANNEL,
        alias: str = DEFAULT_DB_ALIAS,
    ) -> None:
        self.lane = lane
        self.channel = channel
        self.alias = alias
        self.conn: psycopg.Connection | None = None
        self._next_connect = 0.0

    def _connect(self) -> None:
        # The backend's own parameters: OPTIONS (sslmode, service, connect_timeout, …) apply
        # here exactly as they do to Django's connections.
        params = connections[self.alias].get_connection_params()
        self.conn = psycopg.connect(**params, autocommit=True)
        self.conn.execute(f"LISTEN {self.channel}")

    def ensure(self) -> bool:
        """True when the LISTEN connection is up (connecting if it may try again)."""
        if self.conn is not None and not self.conn.closed:
            return True
        if time.monotonic() < self._next_connect:
            return False
        try:
            self._connect()
            return True
        except Exception as exc:  # any failure means: poll instead
            logger.warning("LISTEN unavailable (%s); polling instead", exc)
            self.close()
            self._next_connect = time.monotonic() + self.RECONNECT_SECONDS
            return False

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; True when a task of our lane was announced."""
        if not self.ensure():
            time.sleep(timeout)
            return False
        return any(payload in (self.lane, "") for payload in self.notes(timeout))

    def notes(self, timeout: float) -> list[str]:
        """Block up to `timeout` seconds for a notification; the payloads that came ([] when the
        connection is down: call `ensure` first to know)."""
        if self.conn is None or self.conn.closed:
            return []
        try:
            return [note.payload for note in self.conn.notifies(timeout=timeout, stop_after=1)]
        except Exception as exc:
            logger.warning("LISTEN connection lost (%s); polling until it is back", exc)
            self.close()
            return []

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None
