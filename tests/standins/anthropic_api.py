"""A stand-in for the Anthropic Messages API that the real Claude Code CLI can talk to.

Point the CLI at it with `ANTHROPIC_BASE_URL=<url>` and any `ANTHROPIC_API_KEY`. It answers
`POST /v1/messages` (streamed as server-sent events when the request asks for `stream`, one JSON
message otherwise), `POST /v1/messages/count_tokens` and `GET /v1/models`, and records every
request (`requests`; `conversations` holds the bodies of the scripted model calls).

It plays a script, chosen by `script=`, by reading the conversation it receives:

- **builder**: write `hello.txt` (`hello-2.txt`, … when resumed with a new prompt) with
  `HELLO_LINE`, then `git add` and `git commit` as two Bash calls, then a final answer;
- **reviewer**: try to write `review-notes.txt` (a reviewer must not be able to), then a final
  answer ending in a ```json verdict block (`VERDICT`);
- **loop**: read README forever, to run a CLI past its turn limit.

The step is the number of assistant turns since the last prompt (a user message that is not
only tool results); file paths are made absolute from the working directory the CLI states in
its system prompt. Usage is reported the Anthropic way (input, cache and output tokens);
`input_tokens` per call can be raised to make a run expensive (for budget caps).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from .http import Reply, Request, StandIn

HELLO_LINE = "Hello from the stand-in builder."
VERDICT = {"verdict": "PASS", "score": 90, "findings": [], "summary": "hello.txt looks right."}
REVIEW_NOTES = "review-notes.txt"
FINAL_BUILDER_TEXT = "Created and committed hello.txt."

AUTH_ERROR = {
    "type": "error",
    "error": {"type": "authentication_error", "message": "invalid x-api-key"},
}
RATE_LIMIT_ERROR = {
    "type": "error",
    "error": {
        "type": "rate_limit_error",
        "message": "Number of requests has exceeded your rate limit",
    },
}
OVERLOADED_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

_CWD = re.compile(r"Primary working directory: (\S+)")


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def conversation_text(body: dict[str, Any]) -> str:
    """Every text, tool input and tool result of a request, for assertions on what was sent."""
    parts = []
    for message in body.get("messages") or []:
        for block in _blocks(message):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                parts.append(json.dumps(block.get("input")))
            elif block.get("type") == "tool_result":
                parts.append(json.dumps(block.get("content")))
    return "\n".join(parts)


class AnthropicStandIn(StandIn):
    def __init__(
        self, script: str = "builder", *, model: str = "", input_tokens: int = 120
    ) -> None:
        super().__init__()
        self.script = script
        self.model = model
        self.input_tokens = input_tokens
        # The reviewer's tool calls before its verdict; "{workspace}" is filled in.
        self.reviewer_attempts: list[tuple[str, dict[str, str]]] = [
            ("Write", {"file_path": "{workspace}/" + REVIEW_NOTES, "content": "notes\n"})
        ]
        self.conversations: list[dict[str, Any]] = []
        self.verdict: dict[str, Any] = dict(VERDICT)  # what the reviewer answers
        self._ids = 0
        self._id_lock = threading.Lock()

    # -- routing ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        path = request.path.split("?", 1)[0]
        body = request.json if isinstance(request.json, dict) else {}
        if request.method == "POST" and path == "/v1/messages/count_tokens":
            return Reply.json({"input_tokens": self.input_tokens})
        if request.method == "GET" and path.startswith("/v1/models"):
            name = self.model or "claude-sonnet-4-5"
            return Reply.json(
                {"data": [{"type": "model", "id": name, "display_name": name}], "has_more": False}
            )
        if request.method == "POST" and path == "/v1/messages":
            content, stop = self._answer(body)
            return self._reply(body, content, stop)
        return super().handle(request)

    @property
    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    # -- the script ------------------------------------------------------------------------

    def _answer(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if not body.get("tools"):
            # A side request (a title, a summary, a safety check): a short plain answer.
            return [{"type": "text", "text": "ok"}], "end_turn"
        with self._lock:
            self.conversations.append(body)
        messages = body.get("messages") or []
        prompts = [i for i, m in enumerate(messages) if self._is_prompt(m)]
        last_prompt = prompts[-1] if prompts else 0
        step = sum(1 for m in messages[last_prompt:] if m.get("role") == "assistant")
        workspace = self._workspace(body)
        if self.script == "loop":
            return [self._tool("Read", {"file_path": f"{workspace}/README"})], "tool_use"
        if self.script == "reviewer":
            if step < len(self.reviewer_attempts):
                name, tool_input = self.reviewer_attempts[step]
                filled = {k: v.format(workspace=workspace) for k, v in tool_input.items()}
                return [self._tool(name, filled)], "tool_use"
            verdict = json.dumps(self.verdict)
            text = f"I reviewed the change.\n\n```json\n{verdict}\n```"
            return [{"type": "text", "text": text}], "end_turn"
        name = "hello.txt" if len(prompts) <= 1 else f"hello-{len(prompts)}.txt"
        if step == 0:
            write = {"file_path": f"{workspace}/{name}", "content": HELLO_LINE + "\n"}
            return [self._tool("Write", write)], "tool_use"
        if step == 1:
            return [self._tool("Bash", {"command": f"git add {name}"})], "tool_use"
        if step == 2:
            command = f"git commit -m 'Add {name}'"
            return [self._tool("Bash", {"command": command})], "tool_use"
        return [{"type": "text", "text": FINAL_BUILDER_TEXT.replace("hello.txt", name)}], "end_turn"

    @staticmethod
    def _is_prompt(message: dict[str, Any]) -> bool:
        if message.get("role") != "user":
            return False
        blocks = _blocks(message)
        return bool(blocks) and not any(b.get("type") == "tool_result" for b in blocks)

    @staticmethod
    def _workspace(body: dict[str, Any]) -> str:
        system = body.get("system")
        texts = [json.dumps(system), conversation_text(body)]
        for message in body.get("messages") or []:
            texts.append(json.dumps(message.get("content")))
        for text in texts:
            found = _CWD.search(text.replace("\\n", "\n"))
            if found:
                return found.group(1)
        return "."

    def _tool(self, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
        with self._id_lock:
            self._ids += 1
            number = self._ids
        return {
            "type": "tool_use",
            "id": f"toolu_standin_{number:04d}",
            "name": name,
            "input": tool_input,
        }

    # -- the wire format -------------------------------------------------------------------

    def _reply(self, body: dict[str, Any], content: list[dict[str, Any]], stop: str) -> Reply:
        with self._id_lock:
            self._ids += 1
            message_id = f"msg_standin_{self._ids:04d}"
        model = self.model or str(body.get("model") or "claude-sonnet-4-5")
        usage = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 30,
            "output_tokens": 7 * len(content) + 5,
        }
        if not body.get("stream"):
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            }
            return Reply.json(message)
        start = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        chunks = [_sse("message_start", {"type": "message_start", "message": start})]
        for index, block in enumerate(content):
            if block["type"] == "text":
                opened = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                opened = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            chunks.append(
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": opened},
                )
            )
            chunks.append(
                _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
            chunks.append(
                _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        chunks.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        chunks.append(_sse("message_stop", {"type": "message_stop"}))
        return Reply(200, headers={"Content-Type": "text/event-stream"}, chunks=chunks)
