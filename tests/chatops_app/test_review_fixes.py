"""Odd input from chat: a reply, never a database error."""

from __future__ import annotations

import pytest

from chatops_app import grammar

pytestmark = pytest.mark.django_db


def test_worker_id_with_a_nul_byte_gets_a_reply_not_a_database_error(viewer):
    reply = grammar.execute("worker @backend\x00-1", user=viewer, actor="slack:U1", door="slack")
    assert reply.ok and reply.data["worker_id"] == "@backend-1"
