"""Actor strings: who made a change, and through which door (`user:alice`, `worker:backend-1`).

Built and read back here only, so every door writes the same shape and the audit log's door
is read from it the same way.
"""

from __future__ import annotations

from typing import NamedTuple

CLI = "cli"
SYSTEM = "system"
# The door each kind of actor comes through ('user:' is the web, or the CLI's --as).
DOORS = {"user": "web", "slack": "slack", "discord": "discord", "cli": "cli", "github": "github"}


class Actor(NamedTuple):
    kind: str  # user, slack, discord, worker, github, cli, system
    name: str  # "" for cli and system


def user(name: str) -> str:
    return f"user:{name}"


def slack(user_id: str) -> str:
    return f"slack:{user_id}"


def discord(user_id: str) -> str:
    return f"discord:{user_id}"


def worker(worker_id: str) -> str:
    return f"worker:{worker_id}"


def github(login: str) -> str:
    return f"github:{login}"


def parse(actor: str) -> Actor:
    kind, _, name = (actor or "").partition(":")
    return Actor(kind, name)


def name_of(actor: str) -> str:
    """Who, as a person reads it: `alice` for user:alice, and the door itself for cli and system."""
    kind, name = parse(actor)
    return name or kind


def door_of(actor: str) -> str:
    """The door an actor string came through, as far as it tells."""
    kind = parse(actor).kind
    return DOORS.get(kind, kind[:20])
