"""runworker flags beyond what the database and the clock can hold: a usage error, not a crash."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from workers_app.models import Worker


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--capacity", "99999999999999999999"], "must be at most"),
        (["--capacity", "3000000000"], "must be at most"),
        (["--lease", "99999999999999999999"], "must be a number of seconds ≤"),
    ],
)
def test_absurd_capacity_or_lease_is_refused_before_anything_changes(flags, message):
    with pytest.raises(CommandError, match=message):
        call_command("runworker", "@x-1", "--lane", "backend", "--once", *flags)
    assert not Worker.objects.filter(pk="@x-1").exists()


@pytest.mark.django_db
def test_pause_of_a_worker_id_with_a_nul_byte_is_a_400(client, operator):
    client.force_login(operator)
    # Refused before the view by vibe_project.middleware (any NUL in a request).
    assert client.post("/workers/a%00b/pause/").status_code == 400
