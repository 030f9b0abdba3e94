"""The Approve/Retry buttons on chat messages: one encoding, read by every chat door."""

from __future__ import annotations

BUTTON_ACTIONS = ("approve", "retry", "merge", "rebase")
DISCORD_PREFIX = "vibe"


def slack_action_id(action: str) -> str:
    """Slack `action_id` of a button; its `value` is the task id."""
    return f"vibe_{action}"


def discord_custom_id(action: str, task_id: int) -> str:
    return f"{DISCORD_PREFIX}:{action}:{task_id}"


def parse_slack_action(action_id: str, value: str) -> tuple[str, str] | None:
    """(action, task id text) for one of our buttons, or None for anything else."""
    if not action_id.startswith("vibe_"):
        return None
    action = action_id.removeprefix("vibe_")
    return (action, value) if action in BUTTON_ACTIONS else None


def parse_discord_custom_id(custom_id: str) -> tuple[str, str] | None:
    parts = custom_id.split(":")
    if len(parts) != 3 or parts[0] != DISCORD_PREFIX or parts[1] not in BUTTON_ACTIONS:
        return None
    return parts[1], parts[2]
