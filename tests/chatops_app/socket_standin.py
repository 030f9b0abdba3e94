"""A stand-in for Slack's Socket Mode on 127.0.0.1: `apps.connections.open` and its WebSocket.

One small HTTP server does both, with the standard library only: `POST /api/apps.connections.open`
checks the app-level token and answers with a `ws://` URL on the same port; a `GET` of that URL
with `Upgrade: websocket` is answered with the RFC 6455 handshake, a `hello`, and then frames both
ways (the client's are masked, ours are not; pings get pongs). Tests push envelopes with
`command()` and `click()` and read each acknowledgement with `ack()`, timed from the push.

Point the door at it with `api_url=standin.api_url` (or VIBE_SLACK_API_URL for a subprocess).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import queue
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from tests.chatops_app import doors
from tests.standins.http import LocalServer, Reply, read_body, write_reply

APP_TOKEN = "xapp-1-A0OURS-1-test"
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's fixed key suffix
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def _frame(opcode: int, payload: bytes) -> bytes:
    """A server frame: final, unmasked."""
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 65536:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    return head + payload


def _read_frame(rfile) -> tuple[int, bytes] | None:
    """One client frame (opcode, unmasked payload), or None when the socket closed."""
    head = rfile.read(2)
    if len(head) < 2:
        return None
    opcode, size = head[0] & 0x0F, head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", rfile.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b""
    data = rfile.read(size)
    if mask:
        data = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))
    return opcode, data


class _Socket:
    def __init__(self, wfile) -> None:
        self.wfile = wfile
        self.lock = threading.Lock()
        self.open = True

    def send(self, opcode: int, payload: bytes) -> None:
        with self.lock:
            self.wfile.write(_frame(opcode, payload))
            self.wfile.flush()


class SocketModeStandIn(LocalServer):
    protocol = "HTTP/1.0"

    def __init__(self, *, app_token: str = APP_TOKEN) -> None:
        super().__init__()
        self.app_token = app_token
        self.opened = 0  # apps.connections.open calls that got a URL
        self.refused: list[str] = []  # tokens apps.connections.open turned away
        self.sockets: list[_Socket] = []
        self.connected = threading.Event()
        self._acks: dict[str, queue.Queue] = {}
        self._sent_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.start()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.command == "POST":
            self._open(handler)
        elif handler.command == "GET":
            self._websocket(handler)
        else:
            write_reply(handler, Reply(501, "Unsupported method"))

    # --- apps.connections.open ---------------------------------------------------------------

    def _open(self, handler: BaseHTTPRequestHandler) -> None:
        read_body(handler)
        token = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        if handler.path.split("?")[0] != "/api/apps.connections.open":
            answer = {"ok": False, "error": "unknown_method"}
        elif token != self.app_token:
            self.refused.append(token)
            answer = {"ok": False, "error": "invalid_auth"}
        else:
            self.opened += 1
            answer = {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket=t{self.opened}"}
        write_reply(handler, Reply.json(answer))

    # --- The WebSocket -----------------------------------------------------------------------

    def _websocket(self, handler: BaseHTTPRequestHandler) -> None:
        key = handler.headers.get("Sec-WebSocket-Key", "")
        if handler.headers.get("Upgrade", "").lower() != "websocket" or not key:
            handler.send_error(400, "not a WebSocket handshake")
            return
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", accept)
        handler.end_headers()
        socket = _Socket(handler.wfile)
        with self._lock:
            self.sockets.append(socket)
        hello = {
            "type": "hello",
            "num_connections": 1,
            "connection_info": {"app_id": doors.SLACK_APP},
        }
        socket.send(TEXT, json.dumps(hello).encode())
        self.connected.set()
        try:
            while (frame := _read_frame(handler.rfile)) is not None:
                opcode, data = frame
                if opcode == PING:
                    socket.send(PONG, data)
                elif opcode == CLOSE:
                    break
                elif opcode == TEXT:
                    self._acked(json.loads(data))
        except OSError:
            pass
        finally:
            socket.open = False
            handler.close_connection = True

    def _acked(self, message: dict) -> None:
        envelope_id = str(message.get("envelope_id", ""))
        with self._lock:
            sent = self._sent_at.get(envelope_id, time.monotonic())
            waiting = self._acks.setdefault(envelope_id, queue.Queue())
        waiting.put((message, time.monotonic() - sent))

    # --- What tests do -----------------------------------------------------------------------

    def send(self, envelope: dict) -> str:
        """Push an envelope down the newest socket; returns its envelope_id."""
        assert self.connected.wait(5), "the door never connected"
        envelope_id = envelope["envelope_id"]
        with self._lock:
            socket = next(s for s in reversed(self.sockets) if s.open)
            self._sent_at[envelope_id] = time.monotonic()
            self._acks.setdefault(envelope_id, queue.Queue())
        socket.send(TEXT, json.dumps(envelope).encode())
        return envelope_id

    def _envelope(self, kind: str, payload: dict, envelope_id: str | None = None) -> dict:
        return {
            "envelope_id": envelope_id or f"env-{next(self._ids)}-{doors.unique()}",
            "type": kind,
            "accepts_response_payload": kind == "slash_commands",
            "payload": payload,
        }

    def command(self, text: str, user_id: str, *, envelope_id: str | None = None, **fields) -> str:
        """`/vibe <text>` as Socket Mode sends it: the HTTP form's fields as a JSON payload."""
        payload = {
            "command": "/vibe",
            "text": text,
            "user_id": user_id,
            "team_id": doors.SLACK_TEAM,
            "enterprise_id": doors.SLACK_ENTERPRISE,
            "api_app_id": doors.SLACK_APP,
            "channel_id": "C0VIBE",
            "trigger_id": f"{doors.unique()}.1.abc",
        }
        payload.update(fields)
        payload = {k: v for k, v in payload.items() if v is not None}
        return self.send(self._envelope("slash_commands", payload, envelope_id))

    def click(self, action: str, task_id: int, user_id: str, *, response_url: str, **fields) -> str:
        """A `block_actions` payload (the HTTP one, as JSON) for one of our buttons."""
        body = doors.slack_click_body(action, task_id, user_id, **fields)
        payload = json.loads(_form_payload(body))
        payload["response_url"] = response_url
        return self.send(self._envelope("interactive", payload))

    def ack(self, envelope_id: str, timeout: float = 5.0) -> tuple[dict, float]:
        """The acknowledgement of an envelope, and seconds from the push to it."""
        with self._lock:
            waiting = self._acks.setdefault(envelope_id, queue.Queue())
        return waiting.get(timeout=timeout)

    def no_more_acks(self, envelope_id: str, wait: float = 0.3) -> bool:
        with self._lock:
            waiting = self._acks.setdefault(envelope_id, queue.Queue())
        try:
            waiting.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def refresh(self) -> None:
        """What Slack does every few hours: a `disconnect` message on the open sockets (the
        client must connect anew), then it closes them."""
        with self._lock:
            sockets = [s for s in self.sockets if s.open]
        self.connected.clear()
        warning = {"type": "disconnect", "reason": "refresh_requested"}
        for socket in sockets:
            with contextlib.suppress(OSError):
                socket.send(TEXT, json.dumps(warning).encode())
        assert self.connected.wait(5), "the client did not connect again"
        for socket in sockets:
            with contextlib.suppress(OSError):
                socket.send(CLOSE, struct.pack("!H", 1001))


def _form_payload(body: bytes) -> str:
    return parse_qs(body.decode())["payload"][0]
