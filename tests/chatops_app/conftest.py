"""Fixtures the chat doors' tests share."""

from __future__ import annotations

import pytest

from workers_app.models import Worker


@pytest.fixture
def worker(db) -> Worker:
    """A backend worker of the tests' own, so the default pool's rows stay untouched."""
    return Worker.objects.create(worker_id="@chat-test", lane="backend", capacity_limit=5)
