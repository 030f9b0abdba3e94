"""What both chat doors' signature checks share: the error they raise and the replay window.

Both checks raise `SignatureError` with a reason for the log; the views turn every failure into a
bare 401, so a probe learns nothing and nothing in the body can switch the check off (Slack's
`ssl_check` field, for one, gets no special path).
"""

from __future__ import annotations

from collections.abc import Callable

# Slack's documented replay window, used for Discord too; also applied to timestamps from the
# future, so a request signed with a skewed clock cannot be stored and replayed later. Within
# the window a verified request's signature is remembered (`models.first_sighting`).
MAX_AGE_SECONDS = 5 * 60
# Seconds since 1970 have 10 digits until 2286; a longer "timestamp" is refused before int().
MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """The request is not provably from the chat service; the message says why, for the log."""


def check_fresh(timestamp: str, clock: Callable[[], float]) -> None:
    """A whole number of seconds within 5 minutes of now, either way (Slack's window)."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
        raise SignatureError(f"timestamp {timestamp[:20]!r} is not a whole number of seconds")
    skew = abs(clock() - int(timestamp))
    if skew > MAX_AGE_SECONDS:
        raise SignatureError(f"timestamp is {int(skew)} s away from now; the limit is 300 s")
