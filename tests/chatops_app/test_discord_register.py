"""`manage.py vibe discord-register`: the command JSON Discord receives, and clear refusals."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from chatops_app.discord import api as discord_api
from tests.chatops_app.standins import DISCORD_APPLICATION, configured_standin

# Every command of the grammar (chatops_app/grammar.py), so Discord can do what Slack does.
EXPECTED_SUBCOMMANDS = [
    "status",
    "submit",
    "retry",
    "approve",
    "cancel",
    "merge",
    "rework",
    "rebase",
    "dlq",
    "worker",
    "task",
    "help",
]


@pytest.fixture
def chat_standin(settings):
    with configured_standin(settings) as standin:
        yield standin


def test_register_puts_the_vibe_command_with_the_bot_token(chat_standin):
    stored = discord_api.register_commands()

    (request,) = chat_standin.received("discord")
    assert request.method == "PUT"
    assert request.path == f"/discord/api/v10/applications/{DISCORD_APPLICATION}/commands"
    assert request.headers["Authorization"] == f"Bot {chat_standin.discord_token}"
    assert request.headers["User-Agent"].startswith("DiscordBot (")
    assert request.headers["Content-Type"] == "application/json"
    (command,) = request.body
    assert command["name"] == "vibe" and command["type"] == 1
    options = {o["name"]: o for o in command["options"]}
    assert list(options) == EXPECTED_SUBCOMMANDS
    assert all(o["type"] == discord_api.SUB_COMMAND for o in options.values())
    for name in ("retry", "approve", "cancel", "merge", "rework", "rebase", "task"):
        arg = options[name]["options"][0]
        assert (arg["name"], arg["type"], arg["required"]) == ("id", discord_api.INTEGER, True)
    for name in ("retry", "approve", "cancel"):  # several ids at once
        more = options[name]["options"][1]
        assert (more["name"], more["type"], more["required"]) == ("more", discord_api.STRING, False)
    submit = [(o["name"], o["required"]) for o in options["submit"]["options"]]
    assert submit == [
        ("lane", True),
        ("goal", True),
        ("key", False),
        ("risk", False),
        ("priority", False),
    ]  # Discord wants the required options first
    (worker_arg,) = options["worker"]["options"]
    assert (worker_arg["name"], worker_arg["type"]) == ("id", discord_api.STRING)
    for name in ("status", "dlq", "help"):
        assert "options" not in options[name]
    for option in options.values():
        assert 1 <= len(option["description"]) <= 100
    assert stored[0]["name"] == "vibe" and stored[0]["id"]


def test_the_vibe_command_registers_it_from_the_cli(chat_standin, capsys):
    call_command("vibe", "discord-register")

    assert "registered /vibe with Discord" in capsys.readouterr().out
    assert len(chat_standin.received("discord")) == 1


@pytest.mark.parametrize(
    ("app_id", "token", "missing"),
    [
        ("", "tok", "set VIBE_DISCORD_APPLICATION_ID"),
        ("123", "", "set VIBE_DISCORD_BOT_TOKEN"),
        ("", "", "set VIBE_DISCORD_APPLICATION_ID and VIBE_DISCORD_BOT_TOKEN"),
        ("my-app", "tok", "is not a Discord application id"),
    ],
)
def test_register_without_configuration_says_what_to_set_and_sends_nothing(
    chat_standin, settings, app_id, token, missing
):
    settings.VIBE_DISCORD_APPLICATION_ID = app_id
    settings.VIBE_DISCORD_BOT_TOKEN = token

    with pytest.raises(discord_api.DiscordNotConfigured, match=missing):
        discord_api.register_commands()
    with pytest.raises(CommandError, match=missing):
        call_command("vibe", "discord-register")
    assert chat_standin.received() == []


def test_a_wrong_token_is_a_clear_permanent_error(chat_standin):
    chat_standin.discord_token = "the-real-token"

    with pytest.raises(discord_api.DiscordError) as caught:
        discord_api.register_commands()

    assert caught.value.status == 401 and not caught.value.transient
    assert "HTTP 401" in str(caught.value) and "VIBE_DISCORD_BOT_TOKEN" in str(caught.value)


def test_discord_down_is_a_transient_error(chat_standin):
    chat_standin.fail_next(1, status=502)

    with pytest.raises(discord_api.DiscordError) as caught:
        discord_api.register_commands()

    assert caught.value.transient and "HTTP 502" in str(caught.value)
