"""A slow request body (headers, then a byte every few tenths of a second) is cut with 408
``request body took too long`` at every way of serving: ``runhost`` (daphne's connection layer, which reads a
whole body before the application sees it) and ``create_app`` under uvicorn (the ASGI application itself).
Other requests are served meanwhile. ``body_timeout`` plus one second per 500 bytes received."""

from __future__ import annotations

import json
import socket
import sys
import threading

import httpx

from tests.conftest import free_port
from tests.hosting.serving.test_entry_points import APP, serve
from tests.support.net import drip_until_answered

SLOW = {"error": "request body took too long"}


def trickle_body(port: int, *, limit: float = 60) -> tuple[int, dict, bytes]:
    """POST /input declaring 1,000 bytes, then one byte every 0.2 s until the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        answer = drip_until_answered(sock, b" ", limit=limit)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    return status, json.loads(body) if body else {}, headers.get(b"connection", b"")


def _while_trickling(port: int) -> tuple[tuple, int]:
    """The slow body's answer, and /health's status asked while that body was trickling."""
    result: list = []
    slow = threading.Thread(target=lambda: result.append(trickle_body(port)))
    slow.start()
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code
    finally:
        slow.join(90)
    return result[0], health


def test_runhost_cuts_a_slow_body_with_408(start_host):
    host = start_host("tests.agents:echo_factory", "--trust", "open", "--body-timeout", "1")
    (status, body, connection), health = _while_trickling(host.port)
    assert (status, body, connection) == (408, SLOW, b"close")
    assert health == 200
    r = httpx.post(host.url + "/input", json={"prompt": "after"}, timeout=30)
    assert r.json()["result"] == "echo: after"


def test_create_app_under_uvicorn_cuts_a_slow_body_with_408(tmp_path):
    folder = tmp_path / "user"
    (folder / ".co").mkdir(parents=True)
    (folder / ".co" / "host.yaml").write_text("body_timeout: 1\n")
    (folder / "myagent.py").write_text(APP)
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "myagent:app", "--port", str(port), "--log-level", "warning"]
    with serve(cmd, folder, port) as url:
        (status, body, _), health = _while_trickling(port)
        assert (status, body) == (408, SLOW)
        assert health == 200
        r = httpx.post(url + "/input", json={"prompt": "after"}, timeout=30)
        assert r.json()["result"] == "hello after"
