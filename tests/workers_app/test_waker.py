"""The LISTEN connection is made from Django's own connection parameters."""

from __future__ import annotations

from workers_app import waker as waker_module
from workers_app.waker import Waker


class FakeConnection:
    closed = False

    def __init__(self, seen: dict) -> None:
        self.seen = seen

    def execute(self, sql: str) -> None:
        self.seen["sql"] = sql

    def close(self) -> None:
        self.closed = True


def test_the_listener_connects_with_the_backends_own_parameters(monkeypatch):
    # OPTIONS such as a service file or sslmode reach psycopg as Django's backend passes them.
    params = {"dbname": "factory", "service": "vibe", "sslmode": "verify-full", "user": "w"}
    seen: dict = {}
    wrapper = waker_module.connections["default"]
    monkeypatch.setattr(wrapper, "get_connection_params", lambda: dict(params))
    monkeypatch.setattr(
        waker_module.psycopg,
        "connect",
        lambda **kwargs: seen.update(kwargs) or FakeConnection(seen),
    )
    listener = Waker("backend", channel="vibe_wake")
    assert listener.ensure()
    assert seen == {**params, "autocommit": True, "sql": "LISTEN vibe_wake"}
    listener.close()
