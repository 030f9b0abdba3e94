"""What the outbox needs of a chat service: a `Transport`, and the errors a send can end in.

`outbox.Sender` is the delivery state machine (claims, fencing tokens, backoff, a task's one
message and its thread); a transport only draws a notification and posts or edits one message.
Slack's is `slack.transport.SlackTransport`, Discord's `discord.api.DiscordTransport`.
"""

from __future__ import annotations

from typing import Protocol

from django.conf import settings

from .models import ChatThread, Notification


class DeliveryError(Exception):
    """A send that did not get through. `transient`: worth retrying without limit."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        retry_after: float | None = None,
        channel_wide: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.channel_wide = channel_wide or transient


class MessageGone(DeliveryError):
    """The task's message was deleted (or can no longer be edited): start a new one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)
        self.channel_wide = False


def missing_settings(*names: str) -> list[str]:
    """The settings among `names` still empty: what a transport needs before it can send."""
    return [name for name in names if not getattr(settings, name)]


class Transport(Protocol):
    """One chat service as the outbox sees it. `post` and `update` raise `DeliveryError`."""

    @property
    def name(self) -> str:
        """A `Platform` value: the rows' `channel`."""
        ...

    target: str  # where new messages go (a channel id)
    missing: list[str]  # settings still to set; empty when configured

    def render(self, notification: Notification) -> dict:
        """The message body for this notification, the task as it is now."""
        ...

    def post(self, body: dict, thread: ChatThread | None) -> tuple[str, str]:
        """Post `body` (in `thread`, as a reply, when given): (message id, channel id)."""
        ...

    def update(self, thread: ChatThread, body: dict) -> None:
        """Redraw the thread's message as `body`; raises `MessageGone` when it is gone."""
        ...
