"""Secret-looking strings out of what chat shows.

Agent output and error text end up in chat (a task's last error, history notes, review findings,
a notification's "Why"), and agents print what they see: API keys from the environment, tokens
in URLs, a private key they were asked to rotate. A chat channel is read by more people than the
task page and is kept forever by the chat service, so everything it shows from agents passes
through `redact()` first. Applied before any trimming, so a cut never leaves half a token that
no longer looks like one.

Patterns are deliberately greedy: "[redacted]" in place of something harmless is a small price;
a leaked key is not.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

# Key shapes whose prefix alone says "secret"; the rest of the token goes with it.
_TOKENS = re.compile(
    r"""
    \bsk-ant-[A-Za-z0-9_\-]*                   # Anthropic (sk-ant-api03-…, sk-ant-admin01-…)
  | \bsk-[A-Za-z0-9][A-Za-z0-9_\-]{11,}        # OpenAI and friends (sk-…, sk-proj-…)
  | \bgithub_pat_[A-Za-z0-9_]+                 # GitHub fine-grained tokens
  | \bgh[pousr]_[A-Za-z0-9]{8,}                # GitHub classic, OAuth, app and refresh tokens
  | \bxox[abprse]-[A-Za-z0-9\-]+               # Slack bot, user, app-level and refresh tokens
  | \bxapp-[A-Za-z0-9\-]+                      # Slack app-level tokens
  | \b(?:AKIA|ASIA)[A-Z0-9]{12,}               # AWS access key ids
  | \bAIza[0-9A-Za-z_\-]{20,}                  # Google API keys
  | \bglpat-[A-Za-z0-9_\-]{10,}                # GitLab personal access tokens
    """,
    re.VERBOSE,
)
# `Authorization: Bearer <token>`, as a curl line or a logged header shows it.
_BEARER = re.compile(r"\b(Bearer)(\s+)[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE)
# A PEM private key block; one cut off before its END line is redacted to the end of the text.
_PRIVATE_KEY = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
# `password=…`, `"api_key": "…"`, `SECRET_TOKEN: …`: a quoted value whole, a bare one up to a
# space, quote, `&`, `,` or `;`. Not "tokens" (plural): `input_tokens: 1200` is a usage figure.
# The name starts a word and its parts are bounded, so matching stays linear on long output.
_ASSIGNED = re.compile(
    r"""
    (?<![A-Za-z0-9_\-])
    (?P<name>[A-Za-z0-9_\-]{0,40}?
      (?:password|passwd|secret|token(?!s)|api[_\-]?key|access[_\-]?key|private[_\-]?key
        |credential)
      [A-Za-z0-9_\-]{0,40})
    (?P<sep>["']?\s*[:=]\s*)
    (?:(?P<quote>["'])(?P<quoted>[^"'\n]*)(?P=quote) | (?P<value>[^\s"'&,;<>]+))
    """,
    re.VERBOSE | re.IGNORECASE,
)
# https://user:pass@host — the password part.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.\-]{0,30}://[^\s:/@]{1,256}:)[^\s@/]{1,256}(?=@)", re.IGNORECASE
)


def _assigned(match: re.Match) -> str:
    value = match["quoted"] if match["quote"] else match["value"]
    if not value or value.startswith(REDACTED):
        return match[0]
    quote = match["quote"] or ""
    return f"{match['name']}{match['sep']}{quote}{REDACTED}{quote}"


def redact(text: str) -> str:
    """`text` with every secret-looking string replaced by "[redacted]"."""
    if not text:
        return text or ""
    text = _PRIVATE_KEY.sub(REDACTED, str(text))
    text = _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    text = _TOKENS.sub(REDACTED, text)
    return _ASSIGNED.sub(_assigned, text)
