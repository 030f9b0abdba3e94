"""The audit log: who did what through which door, and what the factory refused."""

from __future__ import annotations

import logging

from django.db import DatabaseError

from .. import actors
from ..models import AuditEntry

logger = logging.getLogger(__name__)


def audit(
    action: str, target: str, *, actor: str, outcome: str, reason: str = "", door: str = ""
) -> None:
    """One audit row; written in its own transaction, so a refusal is kept though nothing moved."""
    AuditEntry.objects.create(
        actor=(actor or "unknown")[:200],
        door=(door or actors.door_of(actor or ""))[:20],
        action=action[:40],
        target=str(target)[:200],
        outcome=outcome,
        reason=str(reason)[:4000],
    )


def refused(action: str, target: str, *, actor: str, reason: str, door: str = "") -> None:
    """Record an attempt the factory refused (no permission, an illegal move, a bad input)."""
    try:
        audit(action, target, actor=actor, outcome="refused", reason=reason, door=door)
    except DatabaseError:  # the refusal itself must still reach the person
        logger.exception("could not record the refused %s of %s by %s", action, target, actor)
