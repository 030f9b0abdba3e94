"""Is this request really from Slack or Discord? Checked on the raw body, before anything reads it.

Both checks raise `SignatureError` with a reason for the log; the views turn every failure into a
bare 401, so a probe learns nothing and nothing in the body can switch the check off (Slack's
`ssl_check` field, for one, gets no special path).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# Slack's documented replay window, used for Discord too; also applied to timestamps from the
# future, so a request signed with a skewed clock cannot be stored and replayed later. Within
# the window a verified request's signature is remembered (`models.first_sighting`).
SLACK_MAX_AGE_SECONDS = 5 * 60
SLACK_VERSION = "v0"


class SignatureError(Exception):
    """The request is not provably from the chat service; the message says why, for the log."""


def slack_signature(body: bytes, timestamp: str, secret: str) -> str:
    """`v0=<hex>`: Slack's HMAC-SHA256 over `v0:{timestamp}:{raw body}`."""
    base = f"{SLACK_VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return f"{SLACK_VERSION}={digest}"


def verify_slack(
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    secret: str,
    clock: Callable[[], float] = time.time,
) -> None:
    """Raise SignatureError unless `signature` signs `body` at a `timestamp` within 5 minutes."""
    if not secret:
        raise SignatureError("VIBE_SLACK_SIGNING_SECRET is not set; refusing every request")
    if not timestamp or not signature:
        raise SignatureError("missing X-Slack-Request-Timestamp or X-Slack-Signature header")
    _check_fresh(timestamp, clock)
    expected = slack_signature(body, timestamp, secret)
    # compare_digest needs ASCII on both sides; a non-ASCII header is simply wrong.
    if not signature.isascii() or not hmac.compare_digest(expected, signature):
        raise SignatureError("X-Slack-Signature does not match the body")


# Seconds since 1970 have 10 digits until 2286; a longer "timestamp" is refused before int().
MAX_TIMESTAMP_DIGITS = 12


def _check_fresh(timestamp: str, clock: Callable[[], float]) -> None:
    """A whole number of seconds within 5 minutes of now, either way (Slack's window)."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
        raise SignatureError(f"timestamp {timestamp[:20]!r} is not a whole number of seconds")
    skew = abs(clock() - int(timestamp))
    if skew > SLACK_MAX_AGE_SECONDS:
        raise SignatureError(f"timestamp is {int(skew)} s away from now; the limit is 300 s")


def _hex_bytes(value: str, length: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise SignatureError(f"{what} is not hexadecimal") from None
    if len(raw) != length:
        raise SignatureError(f"{what} is {len(raw)} bytes; expected {length}")
    return raw


def verify_discord(
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    public_key: str,
    clock: Callable[[], float] = time.time,
) -> None:
    """Raise SignatureError unless `signature` (hex Ed25519) signs `timestamp + body` and the
    timestamp is within 5 minutes of now (Discord sets no window; the same as Slack's)."""
    if not public_key:
        raise SignatureError("VIBE_DISCORD_PUBLIC_KEY is not set; refusing every request")
    if not timestamp or not signature:
        raise SignatureError("missing X-Signature-Ed25519 or X-Signature-Timestamp header")
    _check_fresh(timestamp, clock)
    if len(signature) > 128:
        raise SignatureError("X-Signature-Ed25519 is longer than a signature")
    raw_key = _hex_bytes(public_key, 32, "VIBE_DISCORD_PUBLIC_KEY")
    sig = _hex_bytes(signature, 64, "X-Signature-Ed25519")
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(sig, timestamp.encode() + body)
    except (InvalidSignature, ValueError):
        raise SignatureError("X-Signature-Ed25519 does not match the body") from None
