"""What the chat tests share: tasks in the states they need, made through the lifecycle like
real ones, and requests signed as Slack signs them."""

from __future__ import annotations

import time

from django.urls import reverse

from chatops_app.slack.signature import slack_signature
from tasks_app import lifecycle
from tasks_app.models import Task
from workers_app.models import Worker


def dead_letter_task(
    worker: Worker, goal: str = "build the login page", error_type: str = "agent_exit"
) -> Task:
    task = lifecycle.submit(goal, lane=worker.lane, actor="cli", max_attempts=1)
    claimed = lifecycle.claim_next(worker)
    assert claimed is not None and claimed.pk == task.pk
    lifecycle.fail(task.pk, worker_id=worker.pk, token=claimed.claim_token, error_type=error_type)
    return Task.objects.get(pk=task.pk)


def slack_post(client, view: str, body: bytes, secret: str):
    """POST a form body to one of the Slack views, signed with `secret` as Slack would."""
    ts = str(int(time.time()))
    return client.post(
        reverse(view),
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(body, ts, secret),
        },
    )
