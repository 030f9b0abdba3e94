"""One small recording HTTP server on 127.0.0.1 that every stand-in builds on.

A stand-in subclasses `StandIn` and implements `handle(request) -> Reply`; the server records
each request (`requests`), and tests can queue canned failures (`fail_next(status, body)`)
that are answered before `handle` sees the next matching requests.

    with AnthropicStandIn() as api:
        env = {"ANTHROPIC_BASE_URL": api.url, ...}
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.raw or b"null")
        except ValueError:
            return None


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Server-sent events: each chunk is written and flushed on its own.
    chunks: Iterator[bytes] | list[bytes] | None = None

    @classmethod
    def json(cls, body: Any, status: int = 200, **headers: str) -> Reply:
        return cls(status, body, {"Content-Type": "application/json", **headers})


class StandIn:
    """Subclass and implement `handle`. Use as a context manager; `url` is its base URL."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._failures: deque[tuple[str, Reply]] = deque()
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
                )
                with stand_in._lock:
                    stand_in.requests.append(request)
                reply = stand_in._planned(request) or stand_in.handle(request)
                self._write(reply)

            def _write(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.chunks is not None:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    for chunk in reply.chunks:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
                body = reply.body
                if isinstance(body, dict | list):
                    body = json.dumps(body)
                if isinstance(body, str):
                    body = body.encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def handle(self, request: Request) -> Reply:
        return Reply.json({"error": f"no route for {request.method} {request.path}"}, 404)

    def fail_next(
        self, status: int, body: Any = None, *, path: str = "", count: int = 1, **headers: str
    ) -> None:
        """Answer the next `count` requests whose path contains `path` with this error."""
        reply = Reply.json(
            body if body is not None else {"error": {"message": f"HTTP {status}"}},
            status,
            **headers,
        )
        with self._lock:
            for _ in range(count):
                self._failures.append((path, reply))

    def fail_always(self, status: int, body: Any = None, *, path: str = "", **headers: str) -> None:
        self.fail_next(status, body, path=path, count=10_000, **headers)

    def _planned(self, request: Request) -> Reply | None:
        with self._lock:
            for index, (path, reply) in enumerate(self._failures):
                if path in request.path:
                    del self._failures[index]
                    return reply
        return None

    def start(self) -> StandIn:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
