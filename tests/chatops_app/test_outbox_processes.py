"""`manage.py sendnotifications` as real processes: two at once never double-send; SIGTERM exits.

The processes share this test's database (SQLite file or PostgreSQL) and talk HTTP to the
stand-in on 127.0.0.1, configured through environment variables like a real deployment.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter

import pytest

from chatops_app.models import DeliveryState, Notification
from tasks_app import lifecycle
from tests.chatops_app.standins import ChatStandIn, subprocess_settings
from tests.conftest import REPO_ROOT
from tests.waiting import wait_for

TASKS = 20


def _sendnotifications(python: str, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [python, str(REPO_ROOT / "manage.py"), "sendnotifications", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _task_ids(requests) -> list[int]:
    ids = []
    for request in requests:
        text = request.body.get("text") or request.body.get("content") or ""
        match = re.search(r"Task #(\d+)", text)
        ids.append(int(match.group(1)))
    return ids


@pytest.mark.slow
def test_two_senders_at_once_deliver_every_notification_exactly_once(subprocess_env, python):
    tasks = [
        lifecycle.submit(f"risky change {n}", lane="backend", risk="high", actor="cli")
        for n in range(TASKS)
    ]
    with ChatStandIn() as standin:
        standin.delay = 0.03  # each send takes a moment, so the two senders overlap
        env = {**subprocess_env, **subprocess_settings(standin)}
        first = _sendnotifications(python, env, "--once")
        second = _sendnotifications(python, env, "--once")
        outputs = [p.communicate(timeout=60) for p in (first, second)]
        assert [p.returncode for p in (first, second)] == [0, 0], outputs

        for service in ("slack", "discord"):
            counts = Counter(_task_ids(standin.received(service)))
            assert counts == Counter({t.pk: 1 for t in tasks}), service
    assert set(Notification.objects.values_list("state", flat=True)) == {DeliveryState.SENT}
    assert set(Notification.objects.values_list("attempts", flat=True)) == {1}
    sent_by = [int(re.search(r"(\d+) sent", out).group(1)) for out, _ in outputs]
    assert sum(sent_by) == 2 * TASKS
    assert min(sent_by) > 0, "the senders did not overlap; the race was not exercised"


@pytest.mark.slow
def test_sigterm_stops_the_loop_cleanly(subprocess_env, python):
    task = lifecycle.submit("needs a yes", lane="backend", risk="high", actor="cli")
    with ChatStandIn() as standin:
        env = {**subprocess_env, **subprocess_settings(standin)}
        process = _sendnotifications(python, env, "--interval", "0.2")
        try:
            wait_for(lambda: len(standin.delivered()) == 2, timeout=30, what="two deliveries")
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert "Slack: sending notifications to C0VIBE" in out
    assert "2 sent, 0 to retry later, 0 failed for good." in out
    assert "Traceback" not in err
    assert Notification.objects.filter(task=task, state=DeliveryState.SENT).count() == 2


def test_without_configuration_it_keeps_rows_and_says_so(subprocess_env, python):
    task = lifecycle.submit("needs a yes", lane="backend", risk="high", actor="cli")
    env = {
        **subprocess_env,
        "VIBE_SLACK_BOT_TOKEN": "",
        "VIBE_SLACK_CHANNEL": "",
        "VIBE_DISCORD_BOT_TOKEN": "",
        "VIBE_DISCORD_CHANNEL_ID": "",
    }
    out, err = _sendnotifications(python, env, "--once").communicate(timeout=60)

    assert "Slack: not configured (set VIBE_SLACK_BOT_TOKEN and VIBE_SLACK_CHANNEL)" in out
    assert "its notifications are kept, not sent (1 waiting)" in out
    assert "No chat channel is configured" in out
    rows = Notification.objects.filter(task=task)
    assert [r.state for r in rows] == [DeliveryState.PENDING] * 2


def test_a_bad_interval_is_a_usage_error(subprocess_env, python):
    process = _sendnotifications(python, subprocess_env, "--interval", "soon")
    out, err = process.communicate(timeout=60)

    assert process.returncode == 2
    assert "interval 'soon' is not a number of seconds" in err
    assert "Traceback" not in err
