"""One small recording HTTP server on 127.0.0.1 that every stand-in builds on.

`LocalServer` owns the server: its thread, its `url`, start/close as a context manager, and
one `serve(handler)` hook per request. `StandIn` adds what most stand-ins want: each request
recorded (`requests`), canned failures (`fail_next(status, body)`) answered before `handle`
sees the next matching requests, and `handle(request) -> Reply` to implement.

    with AnthropicStandIn() as api:
        env = {"ANTHROPIC_BASE_URL": api.url, ...}

A stand-in that must see the raw exchange (a WebSocket upgrade, a hang past the client's
timeout) subclasses `LocalServer` and overrides `serve`, using `read_body` and `write_reply`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


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


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def write_reply(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    handler.send_response(reply.status)
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    if reply.chunks is not None:
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        for chunk in reply.chunks:
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
        return
    body = reply.body
    if isinstance(body, dict | list):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class LocalServer:
    """A threaded HTTP server on a free port of 127.0.0.1; subclass and implement `serve`."""

    protocol = "HTTP/1.1"

    def __init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = server.protocol

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                server.serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> Self:
        if self.thread.ident is None:
            self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


class StandIn(LocalServer):
    """Subclass and implement `handle`. Use as a context manager; `url` is its base URL."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self._failures: deque[tuple[str, Reply]] = deque()
        self._lock = threading.Lock()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        request = Request(handler.command, handler.path, headers, read_body(handler))
        with self._lock:
            self.requests.append(request)
        write_reply(handler, self._planned(request) or self.handle(request))

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
