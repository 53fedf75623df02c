"""A WebSocket client that never reads (HARDENING W22), by hand on a raw socket: it must never read, so no
library client will do. Shared by the daphne host's test and the create_app-under-uvicorn test."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Callable

import httpx


def ws_frame(text: str) -> bytes:
    """One masked client text frame (RFC 6455 §5.2), by hand: this client must never read."""
    data, mask = text.encode(), os.urandom(4)
    size = len(data)
    if size < 126:
        header = bytes([0x81, 0x80 | size])
    elif size < 65536:
        header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


def raw_socket(port: int) -> socket.socket:
    """A WebSocket opened by hand with a 4 KiB receive buffer, so the kernel holds little on our side."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


def drain(sock: socket.socket, quiet: float = 5.0) -> tuple[int, bool]:
    """Read until the host ends the connection (True) or nothing comes for ``quiet`` seconds (False)."""
    sock.settimeout(quiet)
    total = 0
    try:
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    except TimeoutError:
        return total, False
    except ConnectionResetError:
        pass
    return total, True


def session_of(url: str, session_id: str, timeout: float = 90) -> dict:
    """The finished record of ``session_id`` on the host at ``url`` (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = httpx.get(f"{url}/sessions/{session_id}", timeout=10)
        if reply.status_code == 200 and reply.json().get("status") not in ("running", "queued"):
            return reply.json()
        time.sleep(0.2)
    raise AssertionError(f"session {session_id} did not finish within {timeout} s")


def flood_a_non_reader(port: int, url: str, log_text: Callable[[], str], *, count: int, size: int) -> None:
    """Ask the flood agent for ``count`` events of ``size`` bytes on a socket that never reads, and assert
    the turn is stored done, the host logs the drop after 10 s without a byte read, and ends the socket
    having sent far less than the turn (what the host and the kernels held)."""
    sid = str(uuid.uuid4())
    sock = raw_socket(port)
    sock.sendall(ws_frame(json.dumps({"type": "CONNECT", "session_id": sid})))
    sock.sendall(ws_frame(json.dumps({"type": "INPUT", "prompt": f"flood {count} {size}"})))
    record = session_of(url, sid)
    assert record["status"] == "done" and record["result"] == f"flooded {count}", record
    deadline = time.monotonic() + 40  # no byte read for 10 s, then the close
    while "none read for 10 s" not in log_text():
        assert time.monotonic() < deadline, "the host kept a socket whose client read nothing"
        time.sleep(0.2)
    received, ended = drain(sock)
    sock.close()
    assert ended, "the host kept a socket that owed a non-reading client the whole turn"
    assert received < count * size // 4, received
