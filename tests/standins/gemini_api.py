"""A stand-in for the Gemini API that the real Gemini CLI (`gemini`) can talk to.

Point the CLI at it with `GOOGLE_GEMINI_BASE_URL=<url>`, any `GEMINI_API_KEY`, and
`security.auth.selectedType = "gemini-api-key"` in its settings (the adapter's `env` and
`prepare` do that). It answers `POST /v1beta/models/<model>:streamGenerateContent?alt=sse`
(server-sent events, one `GenerateContentResponse` per event), the unstreamed
`:generateContent` side calls (the model router's complexity score, JSON answers) and
`:countTokens`, and records every request (`requests`; `conversations` holds the bodies of the
scripted model calls).

It plays a script, chosen by `script=`, by reading the conversation it receives:

- **builder**: `write_file` `hello.txt` (`hello-2.txt`, … when resumed with a new prompt) with
  `HELLO_LINE`, then one `run_shell_command` that adds and commits it, then a final answer;
- **reviewer**: try to `write_file` `review-notes.txt` (`reviewer_attempts`: a reviewer must
  not be able to), then a final answer ending in a ```json verdict block (`VERDICT`).

The step is the number of model turns since the last prompt (a user turn that is not only
function responses); file paths are made absolute from the workspace folder the CLI states in
its session context. Usage is reported the Gemini way (`usageMetadata`: prompt, candidates,
cached and total token counts).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .http import Reply, Request, StandIn

HELLO_LINE = "Hello from the stand-in builder."
VERDICT = {"verdict": "PASS", "score": 90, "findings": [], "summary": "hello.txt looks right."}
REVIEW_NOTES = "review-notes.txt"
FINAL_BUILDER_TEXT = "Created and committed hello.txt."
DEFAULT_MODEL = "gemini-2.5-flash"
PROMPT_TOKENS = 120
CACHED_TOKENS = 30

AUTH_ERROR = {
    "error": {
        "code": 401,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "UNAUTHENTICATED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    }
}
RATE_LIMIT_ERROR = {
    "error": {
        "code": 429,
        "message": "Resource has been exhausted (e.g. check quota).",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"},
        ],
    }
}

_MODEL_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/([^:/]+):(\w+)$")
_WORKSPACE = re.compile(r"Workspace Directories:\*\*\n\s*- (\S+)")


def _texts(content: dict[str, Any]) -> list[str]:
    parts = content.get("parts") or []
    return [str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p]


def conversation_text(body: dict[str, Any]) -> str:
    """Every text, function call and function response of a request, for assertions."""
    parts = []
    for content in body.get("contents") or []:
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if "text" in part:
                parts.append(str(part["text"]))
            for key in ("functionCall", "functionResponse"):
                if key in part:
                    parts.append(json.dumps(part[key]))
    return "\n".join(parts)


class GeminiStandIn(StandIn):
    def __init__(self, script: str = "builder", *, model: str = "") -> None:
        super().__init__()
        self.script = script
        self.model = model
        # The reviewer's tool calls before its verdict; "{workspace}" is filled in.
        self.reviewer_attempts: list[tuple[str, dict[str, str]]] = [
            ("write_file", {"file_path": "{workspace}/" + REVIEW_NOTES, "content": "notes\n"})
        ]
        self.conversations: list[dict[str, Any]] = []

    @property
    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    # -- routing ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        found = _MODEL_PATH.match(request.path.split("?", 1)[0])
        body = request.json if isinstance(request.json, dict) else {}
        if request.method != "POST" or not found:
            return super().handle(request)
        model, method = found.groups()
        if method == "countTokens":
            return Reply.json({"totalTokens": PROMPT_TOKENS})
        if method == "generateContent":
            return Reply.json(self._response(model, [{"text": self._side_answer(body)}]))
        if method == "streamGenerateContent":
            with self._lock:
                self.conversations.append(body)
            return self._stream(model, self._answer(body))
        return super().handle(request)

    # -- the script ------------------------------------------------------------------------

    @staticmethod
    def _side_answer(body: dict[str, Any]) -> str:
        """A side request: the router asks for a complexity score, others for a short JSON."""
        system = " ".join(_texts(body.get("systemInstruction") or {}))
        if "complexity_score" in system:
            return json.dumps({"complexity_reasoning": "A small task.", "complexity_score": 10})
        return json.dumps({"reasoning": "ok", "next_speaker": "user", "summary": "ok"})

    def _answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        contents = body.get("contents") or []
        prompts = [i for i, c in enumerate(contents) if self._is_prompt(c)]
        last_prompt = prompts[-1] if prompts else 0
        step = sum(1 for c in contents[last_prompt:] if c.get("role") == "model")
        workspace = self._workspace(body)
        if self.script == "reviewer":
            if step < len(self.reviewer_attempts):
                name, args = self.reviewer_attempts[step]
                filled = {k: v.format(workspace=workspace) for k, v in args.items()}
                return [{"functionCall": {"name": name, "args": filled}}]
            text = f"I reviewed the change.\n\n```json\n{json.dumps(VERDICT)}\n```"
            return [{"text": text}]
        # The first prompt of a session carries the session context too: count real prompts.
        asked = sum(1 for i in prompts if not self._is_context(contents[i]))
        name = "hello.txt" if asked <= 1 else f"hello-{asked}.txt"
        if step == 0:
            write = {"file_path": f"{workspace}/{name}", "content": HELLO_LINE + "\n"}
            return [{"functionCall": {"name": "write_file", "args": write}}]
        if step == 1:
            command = f"git add {name} && git commit -q -m 'Add {name}'"
            shell = {"command": command, "description": f"Commit {name}"}
            return [{"functionCall": {"name": "run_shell_command", "args": shell}}]
        return [{"text": FINAL_BUILDER_TEXT.replace("hello.txt", name)}]

    @staticmethod
    def _is_prompt(content: dict[str, Any]) -> bool:
        if content.get("role") != "user":
            return False
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        return bool(parts) and not any("functionResponse" in p for p in parts)

    @staticmethod
    def _is_context(content: dict[str, Any]) -> bool:
        """A user turn that only holds the CLI's <session_context> block."""
        texts = _texts(content)
        return bool(texts) and all(t.lstrip().startswith("<session_context>") for t in texts)

    @staticmethod
    def _workspace(body: dict[str, Any]) -> str:
        found = _WORKSPACE.search(conversation_text(body))
        return found.group(1) if found else "."

    # -- the wire format -------------------------------------------------------------------

    def _response(self, model: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
        output = 7 * len(parts) + 5
        return {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": PROMPT_TOKENS,
                "candidatesTokenCount": output,
                "cachedContentTokenCount": CACHED_TOKENS,
                "totalTokenCount": PROMPT_TOKENS + output,
            },
            "modelVersion": self.model or model,
            "responseId": "standin-response",
        }

    def _stream(self, model: str, parts: list[dict[str, Any]]) -> Reply:
        events = []
        for index, part in enumerate(parts):
            chunk = self._response(model, [part])
            if index < len(parts) - 1:
                del chunk["candidates"][0]["finishReason"], chunk["usageMetadata"]
            events.append(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
        return Reply(200, headers={"Content-Type": "text/event-stream"}, chunks=events)
