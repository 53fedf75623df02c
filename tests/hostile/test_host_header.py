"""D22 at both doors of every way of serving: ``Host`` is checked on every HTTP request and on every WebSocket
upgrade, before the socket is accepted, under ``runhost`` (daphne) and ``create_app`` under uvicorn alike; a
forged ``Host`` (with or without an ``Origin`` equal to it) and an empty one are refused at both doors."""

from __future__ import annotations

import socket
import sys

import pytest

from tests.conftest import free_port
from tests.hosting.serving.test_entry_points import serve
from tests.support.net import exchange

REQUEST = "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"
UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def _exchange(port: int, path: str, host: str, extra: str) -> bytes:
    return exchange(port, REQUEST.format(path=path, host=host, extra=extra).encode())


def http_status(port: int, host: str, origin: str | None = None) -> int:
    extra = "Connection: close\r\n" + (f"Origin: {origin}\r\n" if origin else "")
    return int(_exchange(port, "/health", host, extra).split(b" ", 2)[1])


def ws_close_code(port: int, host: str, origin: str | None = None) -> int | None:
    """The close code the upgrade ends with before any frame (None: accepted and left open)."""
    extra = UPGRADE + (f"Origin: {origin}\r\n" if origin else "")
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(REQUEST.format(path="/ws", host=host, extra=extra).encode())
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < 4:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            return None
    head, _, frames = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert frames[:1] == b"\x88", frames[:40]  # the first frame is the close
    return int.from_bytes(frames[2:4], "big")


CASES = [
    ("forged", "evil.example:8000", None),
    ("forged with its Origin", "evil.example:8000", "http://evil.example:8000"),
    ("empty", "", None),
]


def _check_both_doors(port: int) -> None:
    for _, host, origin in CASES:
        assert http_status(port, host, origin) == 400, host
        assert ws_close_code(port, host, origin) == 4003, host
    assert http_status(port, f"127.0.0.1:{port}") == 200
    assert ws_close_code(port, f"127.0.0.1:{port}") is None


def test_runhost_checks_host_at_both_doors(start_host):
    host = start_host("tests.agents:echo_factory")
    _check_both_doors(host.port)


@pytest.mark.parametrize("server", ["uvicorn"])
def test_create_app_checks_host_at_both_doors(tmp_path, server):
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "userapp.py").write_text(
        "from hosting import create_app\nfrom tests.agents import echo_factory\napp = create_app(echo_factory)\n"
    )
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "userapp:app", "--port", str(port), "--log-level", "warning"]
    with serve(cmd, folder, port):
        _check_both_doors(port)
