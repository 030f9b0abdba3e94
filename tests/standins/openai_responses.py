"""A stand-in for the OpenAI Responses API (`POST /v1/responses`, streamed), enough for Codex.

It plays a short script, chosen when it is made, by looking at the conversation each request
carries (Codex is stateless towards the API: every request sends the whole history):

- **builder**: writes `hello.txt` with one shell call, runs `cat hello.txt`, then says it is done;
- **reviewer**: tries to write `review-was-here.txt` (a read-only reviewer must not manage),
  then answers with a text that ends in a ```json verdict block.

The step is the number of tool outputs the conversation holds since its last user message, so
a resumed session (the earlier history plus a new prompt) plays the script again from the top.
Codex's shell tool is `exec_command` with `{"cmd": "<shell command>"}`; its output comes back
as a `function_call_output` item with the same `call_id`.

    with OpenAIResponsesStandIn("builder") as api:
        extra_args = api.codex_args()   # the -c options that point Codex at it
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .http import Reply, Request, StandIn

MODEL = "gpt-standin"
HELLO_FILE = "hello.txt"
HELLO_TEXT = "hello from the stand-in model"
REVIEW_FILE = "review-was-here.txt"
VERDICT = {
    "verdict": "PASS",
    "score": 90,
    "findings": [],
    "summary": "The change does what the task asks.",
}
FINAL_BUILDER_TEXT = f"I created {HELLO_FILE} and checked its content."
FINAL_REVIEWER_TEXT = (
    "I read the change; it is fine.\n\n```json\n" + json.dumps(VERDICT, indent=2) + "\n```"
)
# Per response, in the API's own shape; Codex sums nothing, it reports each turn's figures.
USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 200},
    "output_tokens": 40,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 1240,
}

AUTH_ERROR = {
    "error": {
        "message": "Incorrect API key provided: sk-test. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
RATE_LIMIT_ERROR = {
    "error": {
        "message": "Rate limit reached for gpt-standin on tokens per min (TPM): Limit 1000, "
        "Used 1000, Requested 1200. Please try again in 7s.",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def _sse(events: list[dict[str, Any]]) -> Iterator[bytes]:
    for event in events:
        yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class OpenAIResponsesStandIn(StandIn):
    def __init__(self, script: str = "builder", model: str = MODEL) -> None:
        if script not in ("builder", "reviewer"):
            raise ValueError(f"unknown script {script!r}")
        super().__init__()
        self.script = script
        self.model = model
        self._responses = 0

    # What tests read back -------------------------------------------------------------
    @property
    def model_requests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/responses")]

    def codex_args(self, provider: str = "standin") -> list[str]:
        """The `-c` options (profile extra_args) that make Codex use this stand-in, no retries."""
        prefix = f"model_providers.{provider}"
        return [
            "-c",
            f'{prefix}.name="{provider}"',
            "-c",
            f'{prefix}.base_url="{self.url}/v1"',
            "-c",
            f'{prefix}.wire_api="responses"',
            "-c",
            f'{prefix}.env_key="OPENAI_API_KEY"',
            "-c",
            f"{prefix}.request_max_retries=0",
            "-c",
            f"{prefix}.stream_max_retries=0",
            "-c",
            f'model_provider="{provider}"',
            "-c",
            f'model="{self.model}"',
        ]

    # The API --------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        if request.method == "POST" and request.path.endswith("/responses"):
            body = request.json if isinstance(request.json, dict) else {}
            return self._respond(body.get("input") or [])
        if request.method == "GET" and request.path.endswith("/models"):
            return Reply.json({"object": "list", "data": [], "models": []})
        return super().handle(request)

    def _respond(self, conversation: list[dict[str, Any]]) -> Reply:
        step = _tool_outputs_since_last_user_message(conversation)
        self._responses += 1
        n = self._responses
        if self.script == "builder":
            plan: list[dict[str, Any]] = [
                _call(n, f"printf '%s\\n' '{HELLO_TEXT}' > {HELLO_FILE}"),
                _call(n, f"cat {HELLO_FILE}"),
            ]
            final = FINAL_BUILDER_TEXT
        else:
            plan = [_call(n, f"printf 'reviewed\\n' > {REVIEW_FILE}")]
            final = FINAL_REVIEWER_TEXT
        item = plan[step] if step < len(plan) else _message(n, final)
        return Reply(200, headers={"Content-Type": "text/event-stream"}, chunks=_stream(n, item))


def _tool_outputs_since_last_user_message(conversation: list[dict[str, Any]]) -> int:
    count = 0
    for item in conversation:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message" and item.get("role") == "user":
            text = "".join(
                str(part.get("text", ""))
                for part in item.get("content") or []
                if isinstance(part, dict)
            )
            # Codex adds its own user-role context blocks; only a real prompt restarts the script.
            if not text.lstrip().startswith("<"):
                count = 0
        elif item.get("type") == "function_call_output":
            count += 1
    return count


def _call(n: int, command: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{n}",
        "call_id": f"call_{n}",
        "name": "exec_command",
        "arguments": json.dumps({"cmd": command}),
        "status": "completed",
    }


def _message(n: int, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": f"msg_{n}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _stream(n: int, item: dict[str, Any]) -> Iterator[bytes]:
    response_id = f"resp_{n}"
    started = (
        {**item, "status": "in_progress", "content": []}
        if item["type"] == "message"
        else {**item, "status": "in_progress", "arguments": ""}
    )
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": started},
    ]
    if item["type"] == "message":
        text = item["content"][0]["text"]
        half = len(text) // 2
        for delta in (text[:half], text[half:]):
            events.append(
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": delta,
                }
            )
    else:
        events.append(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": item["id"],
                "output_index": 0,
                "delta": item["arguments"],
            }
        )
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.completed",
            "response": {"id": response_id, "status": "completed", "usage": USAGE},
        },
    ]
    return _sse(events)
