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

# Slack's documented replay window; also applied to timestamps from the future, so a request
# signed with a skewed clock cannot be stored and replayed later.
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
    if not timestamp.isascii() or not timestamp.isdigit():
        raise SignatureError(f"timestamp {timestamp[:20]!r} is not a whole number of seconds")
    skew = abs(clock() - int(timestamp))
    if skew > SLACK_MAX_AGE_SECONDS:
        raise SignatureError(f"timestamp is {int(skew)} s away from now; the limit is 300 s")
    expected = slack_signature(body, timestamp, secret)
    # compare_digest needs ASCII on both sides; a non-ASCII header is simply wrong.
    if not signature.isascii() or not hmac.compare_digest(expected, signature):
        raise SignatureError("X-Slack-Signature does not match the body")


def _hex_bytes(value: str, length: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise SignatureError(f"{what} is not hexadecimal") from None
    if len(raw) != length:
        raise SignatureError(f"{what} is {len(raw)} bytes; expected {length}")
    return raw


def verify_discord(
    body: bytes, *, timestamp: str | None, signature: str | None, public_key: str
) -> None:
    """Raise SignatureError unless `signature` (hex Ed25519) signs `timestamp + body`."""
    if not public_key:
        raise SignatureError("VIBE_DISCORD_PUBLIC_KEY is not set; refusing every request")
    if not timestamp or not signature:
        raise SignatureError("missing X-Signature-Ed25519 or X-Signature-Timestamp header")
    raw_key = _hex_bytes(public_key, 32, "VIBE_DISCORD_PUBLIC_KEY")
    sig = _hex_bytes(signature, 64, "X-Signature-Ed25519")
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(sig, timestamp.encode() + body)
    except (InvalidSignature, ValueError):
        raise SignatureError("X-Signature-Ed25519 does not match the body") from None
