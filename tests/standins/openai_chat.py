"""A stand-in for the OpenAI chat-completions API (`POST /v1/chat/completions`), for Aider.

Aider talks to it through litellm (`OPENAI_API_BASE=<url>/v1`, any `OPENAI_API_KEY`). Aider
edits files with plain-text edit formats, not tool calls, so the scripted "file write" is a
reply in the *whole* edit format (a file name, then a fenced block with the file's content).
The script reads the conversation it is sent:

- a commit-message request (Aider's weak model, after it applied an edit) gets a one-line
  commit message;
- a conversation summary request gets a short summary;
- a reviewer (Aider's ask mode: the system prompt asks it not to edit) gets an attempted write
  of `HELLO_FILE` (ask mode must not apply it) and a final answer ending in a verdict block;
- a builder gets a write of `HELLO_FILE` with `HELLO_TEXT`, a shell command suggestion, and a
  final sentence.

Every answer reports token usage in OpenAI's format (`usage.prompt_tokens`, …), streamed as
server-sent events when the request asks for `stream`. `chat_requests` keeps what was asked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from .http import Reply, Request, StandIn

HELLO_FILE = "hello.txt"
HELLO_TEXT = "Hello from the stand-in model."
COMMIT_MESSAGE = "feat: Add hello.txt greeting"
BUILDER_FINAL = "I created hello.txt with a greeting. All done."
REVIEWER_WRITE = "A reviewer must not write this."
VERDICT = {
    "verdict": "PASS",
    "score": 91,
    "findings": [],
    "summary": "hello.txt holds the greeting; nothing else changed.",
}
PROMPT_TOKENS = 1200
COMPLETION_TOKENS = 80
AUTH_ERROR = {
    "error": {
        "message": "Incorrect API key provided: sk-bad. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
RATE_LIMIT_ERROR = {
    "error": {
        "message": "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, "
        "Used 3, Requested 1. Please try again in 20s.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def file_write(text: str, *, search_replace: bool) -> str:
    """`HELLO_FILE` written with `text`, in the edit format Aider asked for."""
    if search_replace:  # the "diff" format: an empty SEARCH creates the file
        return f"{HELLO_FILE}\n```\n<<<<<<< SEARCH\n=======\n{text}\n>>>>>>> REPLACE\n```\n"
    return f"{HELLO_FILE}\n```\n{text}\n```\n"  # the "whole" format


def builder_reply(*, search_replace: bool) -> str:
    # In the whole format every fenced block is a file, so only the diff format gets a shell
    # command suggestion (which Aider does not run under --yes-always: it needs an explicit yes).
    shell = "You can check it with:\n\n```bash\ncat hello.txt\n```\n\n" if search_replace else ""
    return (
        f"I will create {HELLO_FILE} with a greeting.\n\n"
        f"{file_write(HELLO_TEXT, search_replace=search_replace)}\n"
        f"{shell}{BUILDER_FINAL}\n"
    )


def reviewer_reply(*, search_replace: bool) -> str:
    return (
        "Let me fix the greeting first.\n\n"
        f"{file_write(REVIEWER_WRITE, search_replace=search_replace)}\n"
        "The change is small and correct.\n\n"
        f"```json\n{json.dumps(VERDICT, indent=2)}\n```\n"
    )


def _text(content: Any) -> str:
    """A message's content as text (a string, or a list of content parts)."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _system(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")


class OpenAIChatStandIn(StandIn):
    """The scripted model. `chat_requests` holds the JSON bodies of chat-completion calls."""

    model = "gpt-4o-mini"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [
            r.json
            for r in self.requests
            if r.path.rstrip("/").endswith("/chat/completions") and isinstance(r.json, dict)
        ]

    @property
    def agent_requests(self) -> list[dict[str, Any]]:
        """The main model's calls: not commit messages or summaries (Aider's weak model)."""
        agent = ("builder", "reviewer")
        return [body for body in self.chat_requests if self.purpose(body) in agent]

    @staticmethod
    def purpose(body: dict[str, Any]) -> str:
        system = _system(body)
        if "commit message" in system.lower():
            return "commit"
        if "summarize" in system.lower():
            return "summary"
        if "answer questions about the supplied code" in system.lower():
            return "reviewer"
        return "builder"

    def handle(self, request: Request) -> Reply:
        path = request.path.split("?")[0].rstrip("/")
        if request.method == "GET" and path.endswith("/models"):
            return Reply.json({"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return super().handle(request)
        body = request.json if isinstance(request.json, dict) else {}
        purpose = self.purpose(body)
        search_replace = "SEARCH/REPLACE" in _system(body)
        if purpose == "commit":
            text = COMMIT_MESSAGE
        elif purpose == "summary":
            text = "I asked you to create hello.txt; you did."
        elif purpose == "reviewer":
            text = reviewer_reply(search_replace=search_replace)
        else:
            text = builder_reply(search_replace=search_replace)
        model = str(body.get("model") or self.model)
        if body.get("stream"):
            return Reply(
                200,
                headers={"Content-Type": "text/event-stream"},
                chunks=_sse(text, model, include_usage=True),
            )
        return Reply.json(
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage(),
            }
        )


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def _sse(text: str, model: str, *, include_usage: bool) -> Iterator[bytes]:
    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
    for start in range(0, len(text), 40):
        yield event([{"index": 0, "delta": {"content": text[start : start + 40]}}])
    yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    if include_usage:
        yield event([], usage=_usage())
    yield b"data: [DONE]\n\n"
