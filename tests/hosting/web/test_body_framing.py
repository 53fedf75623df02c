"""Bodies framed other than by ``Content-Length``, and bodies that are not JSON, under the real daphne server
(issue 15.9): a chunked body is read within the cap; a form or multipart body is 415 with an ``error``."""

from __future__ import annotations

import contextlib
import json
import socket

import httpx
import pytest

from tests.conftest import NO_TURN_LIMITS

HEAD = b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"


@pytest.fixture(scope="module")
def echo(module_hosts):
    return module_hosts(
        "tests.agents:echo_factory",
        "--trust",
        "open",
        *NO_TURN_LIMITS,
        yaml="max_file_size: 1\nmax_files_per_request: 1\n",
    )


def exchange(port: int, request: bytes) -> tuple[int, dict]:
    """Send raw bytes, read to the close; the status and the JSON body (``{}`` when there is none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer, "the connection closed without an answer"
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


def chunked(body: bytes, size: int = 1000) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_a_chunked_body_is_read(echo):
    body = json.dumps({"prompt": "x" * 1000}).encode()
    status, answer = exchange(
        echo.port, HEAD + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body)
    )
    assert status == 200, answer
    assert answer["result"] == "echo: " + "x" * 1000


def test_a_chunked_body_past_twisteds_memory_threshold_is_read(echo):
    prompt = "y" * 300_000  # twisted spools past 100 kB to a temp file; still under the ~3.7 MB cap
    body = json.dumps({"prompt": prompt}).encode()
    status, answer = exchange(
        echo.port, HEAD + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 65536)
    )
    assert (status, answer.get("result")) == (200, "echo: " + prompt)


def test_httpx_streaming_a_body_without_length_is_served(echo):
    def parts():
        yield b'{"prompt": '
        yield b'"streamed"}'

    response = httpx.post(
        echo.url + "/input", content=parts(), headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "echo: streamed"


def test_an_empty_chunked_body_is_invalid_json(echo):
    status, answer = exchange(
        echo.port, HEAD + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert (status, answer) == (400, {"error": "Invalid JSON"})


@pytest.mark.parametrize(
    "content_type, body",
    [
        (b"multipart/form-data", b"xx"),  # no boundary: twisted's own parser answered a bare 400
        (b"multipart/form-data; boundary=abc", b"not multipart at all"),
        (
            b"multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi\r\n--x--\r\n',
        ),
        (b"application/x-www-form-urlencoded", b"prompt=hi"),
    ],
    ids=["multipart without boundary", "malformed multipart", "multipart", "form"],
)
def test_a_body_that_is_not_json_is_415_with_an_error(echo, content_type, body):
    status, answer = exchange(
        echo.port, HEAD + b"Content-Type: " + content_type + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert (status, answer) == (415, {"error": "Unsupported media type"})


def test_the_host_serves_after_them(echo):
    assert httpx.post(echo.url + "/input", json={"prompt": "still"}, timeout=30).json()["result"] == "echo: still"
