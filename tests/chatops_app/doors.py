"""Correctly signed requests to the live chat views, each one unique (else the replay cache would
answer it): a Slack slash command, a Slack button click, a Discord command and a Discord click.

Workspace fields default to `OURS` (the ids the `bound` fixtures put in the settings); pass
`team_id=None` and the like to leave a field out, or another value to come from elsewhere.
"""

from __future__ import annotations

import itertools
import json
import time
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.urls import reverse

from chatops_app.discord.render import custom_id as discord_custom_id
from chatops_app.slack.signature import slack_signature

SLACK_SECRET = "test-slack-signing-secret"
SLACK_TEAM = "T0OURS"
SLACK_ENTERPRISE = "E0OURS"
SLACK_APP = "A0OURS"
DISCORD_GUILD = "100000000000000001"
DISCORD_APPLICATION = "800000000000000001"

_unique = itertools.count(1)


def unique() -> int:
    return next(_unique)


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def slack_signed(
    client, view: str, body: bytes, *, ts: str | None = None, secret: str = SLACK_SECRET
):
    ts = ts or str(int(time.time()))
    return client.post(
        reverse(view),
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(body, ts, secret),
        },
    )


def slack_command_body(text: str, user_id: str, **fields: str | None) -> bytes:
    form = {
        "command": "/vibe",
        "text": text,
        "user_id": user_id,
        "team_id": SLACK_TEAM,
        "enterprise_id": SLACK_ENTERPRISE,
        "api_app_id": SLACK_APP,
        "trigger_id": f"{unique()}.1.abc",
    }
    form.update(fields)
    return urlencode({k: v for k, v in form.items() if v is not None}).encode()


def slack_command(client, text: str, user_id: str, *, ts: str | None = None, **fields):
    body = slack_command_body(text, user_id, **fields)
    return slack_signed(client, "chatops_app:slack_commands", body, ts=ts)


def slack_click_body(
    action: str,
    task_id: int,
    user_id: str,
    *,
    team=SLACK_TEAM,
    user_team=SLACK_TEAM,
    enterprise=SLACK_ENTERPRISE,
    app=SLACK_APP,
) -> bytes:
    """A `block_actions` payload; None leaves a field out (Slack sends `enterprise: null`)."""
    user = {"id": user_id, "username": f"user-{user_id}"}
    if user_team is not None:
        user["team_id"] = user_team
    payload: dict = {
        "type": "block_actions",
        "user": user,
        "team": {"id": team, "domain": "ours"} if team is not None else None,
        "enterprise": {"id": enterprise, "name": "Ours"} if enterprise is not None else None,
        "actions": [
            {
                "action_id": f"vibe_{action}",
                "value": str(task_id),
                "action_ts": f"{unique()}.000200",
            }
        ],
    }
    if app is not None:
        payload["api_app_id"] = app
    return urlencode({"payload": json.dumps(payload)}).encode()


def slack_click(client, action: str, task_id: int, user_id: str, *, ts=None, **fields):
    body = slack_click_body(action, task_id, user_id, **fields)
    return slack_signed(client, "chatops_app:slack_interactions", body, ts=ts)


def discord_post(client, key: Ed25519PrivateKey, body: bytes, *, ts: str | None = None):
    ts = ts or str(int(time.time()))
    return client.post(
        reverse("chatops_app:discord_interactions"),
        data=body,
        content_type="application/json",
        headers={
            "X-Signature-Ed25519": key.sign(ts.encode() + body).hex(),
            "X-Signature-Timestamp": ts,
        },
    )


def discord_interaction(
    kind: int, data: dict, user_id: str, *, guild=DISCORD_GUILD, application=DISCORD_APPLICATION
) -> dict:
    """An interaction from a guild member, or from a DM when `guild` is None."""
    user = {"id": user_id, "username": f"user{user_id}", "global_name": None}
    interaction: dict = {"id": str(10**18 + unique()), "type": kind, "token": "t", "data": data}
    if guild is None:
        interaction["user"] = user
    else:
        interaction.update(guild_id=guild, member={"user": user, "roles": []})
    if application is not None:
        interaction["application_id"] = application
    return interaction


def discord_command_data(sub: str, value=None) -> dict:
    option: dict = {"type": 1, "name": sub}
    if value is not None:
        option["options"] = [
            {"type": 4 if isinstance(value, int) else 3, "name": "id", "value": value}
        ]
    return {"id": "2", "name": "vibe", "type": 1, "options": [option]}


def discord_command(client, key, sub: str, value=None, *, user_id: str, ts=None, **where):
    interaction = discord_interaction(2, discord_command_data(sub, value), user_id, **where)
    return discord_post(client, key, json.dumps(interaction).encode(), ts=ts)


def discord_click(client, key, action: str, task_id: int, *, user_id: str, ts=None, **where):
    data = {"custom_id": discord_custom_id(action, task_id), "component_type": 2}
    interaction = discord_interaction(3, data, user_id, **where)
    interaction["message"] = {"id": "55", "content": "**Task needs you**", "components": []}
    return discord_post(client, key, json.dumps(interaction).encode(), ts=ts)


def answer_text(response) -> str:
    """Everything a person would read in a response, as one string."""
    if response.status_code != 200 or not response.content:
        return response.content.decode(errors="replace")
    return json.dumps(response.json())
