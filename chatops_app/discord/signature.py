"""Is this interaction really from Discord? Ed25519 over `timestamp + raw body`."""

from __future__ import annotations

import time
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..signing import SignatureError, check_fresh


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
    check_fresh(timestamp, clock)
    if len(signature) > 128:
        raise SignatureError("X-Signature-Ed25519 is longer than a signature")
    raw_key = _hex_bytes(public_key, 32, "VIBE_DISCORD_PUBLIC_KEY")
    sig = _hex_bytes(signature, 64, "X-Signature-Ed25519")
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(sig, timestamp.encode() + body)
    except (InvalidSignature, ValueError):
        raise SignatureError("X-Signature-Ed25519 does not match the body") from None
