"""HARDENING §3 rows that need raw sockets or other host settings: H7, H15, G3, G8, S13, S15, F9, P2, P3."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from nacl.signing import SigningKey

from tests.conftest import HostProcess
from tests.hostile.conftest import Snapshot, assert_clean_body, error_of
from trust.identity import address_of
from trust.signing import sign_payload

BLOCKED = SigningKey.generate()
BLOCKED_ADDRESS = address_of(BLOCKED.verify_key)
LISTED = SigningKey.generate()


@pytest.fixture(scope="module")
def strict_host(tmp_path_factory) -> Iterator[HostProcess]:
    folder = tmp_path_factory.mktemp("strict")
    (folder / ".co").mkdir()
    (folder / ".co" / "host.yaml").write_text("trust: strict\n")
    # F9: CRLF line ends, comments, an uppercase copy of the address
    (folder / ".co" / "blacklist.txt").write_bytes(
        b"# blocked callers\r\n\r\n" + ("0x" + BLOCKED_ADDRESS[2:].upper()).encode() + b"  # rogue\r\n"
    )
    (folder / ".co" / "whitelist.txt").write_text(address_of(LISTED.verify_key) + "\n")
    host = HostProcess(folder).start()
    yield host
    host.stop()


@pytest.fixture(scope="module")
def production_host(tmp_path_factory) -> Iterator[HostProcess]:
    folder = tmp_path_factory.mktemp("prod")
    (folder / ".co").mkdir()
    (folder / ".co" / "whitelist.txt").write_text(address_of(LISTED.verify_key) + "\n")  # production is strict
    host = HostProcess(folder, "tests.agents:failing_factory", env={"CONNECTONION_ENV": "production"}).start()
    yield host
    host.stop()


def raw_exchange(host: HostProcess, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, return whatever comes back until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", host.port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        chunks = []
        sock.settimeout(3)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, OSError):
            pass
    return b"".join(chunks)


def status_of(reply: bytes) -> int | None:
    if not reply.startswith(b"HTTP/1."):
        return None
    return int(reply.split(b" ", 2)[1])


REQUEST = b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
BODY = b'{"prompt":"calculate 1+1"}'

SMUGGLING = [
    ("H7 Content-Length 10, 1 MB sent", REQUEST + b"Content-Length: 10\r\n\r\n" + b"x" * 1_000_000),
    (
        "H7 Content-Length and chunked",
        REQUEST
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(BODY):x}\r\n".encode()
        + BODY
        + b"\r\n0\r\n\r\n",
    ),
    ("H7 two Content-Length", REQUEST + f"Content-Length: {len(BODY)}\r\nContent-Length: 3\r\n\r\n".encode() + BODY),
    (
        "G8 501 headers",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(f"X-H{i}: v\r\n".encode() for i in range(501))
        + b"\r\n",
    ),
    ("G8 17 KiB of headers", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n"),
]


@pytest.mark.parametrize("data", [pytest.param(row[1], id=row[0]) for row in SMUGGLING])
def test_h7_g8_malformed_framing_processes_at_most_one_request(small_host, data):
    snap = Snapshot(small_host)
    jsonl = small_host.project / ".co" / "session_results.jsonl"
    lines_before = jsonl.read_bytes().count(b"\n") if jsonl.exists() else 0
    reply = raw_exchange(small_host, data)
    status = status_of(reply)
    assert status is None or status < 500, reply[:300]
    assert b"Traceback" not in reply and b"<html" not in reply.lower()
    if data.startswith(b"GET"):
        assert status in (None, 400, 431), reply[:300]
    lines_after = jsonl.read_bytes().count(b"\n") if jsonl.exists() else 0
    assert lines_after - lines_before <= 2  # at most one turn: its running line and its done line
    snap.assert_healthy()


def test_h15_log_injection_stays_on_one_line(small_host):
    marker = f"pwned{int(time.time() * 1000)}"
    prompt = f"hello\n2024-01-15 [agent] Result: {marker}\x1b[2J"
    response = httpx.post(small_host.url + "/input", json={"prompt": prompt}, timeout=30)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5
    logs = small_host.project / ".co" / "logs"
    text = ""
    while time.monotonic() < deadline and marker not in text:
        text = "".join(p.read_text(errors="replace") for p in logs.glob("*.log")) if logs.exists() else ""
        time.sleep(0.1)
    assert marker in text, "the prompt never reached the log"
    for line in text.splitlines():
        assert not line.startswith("2024-01-15 [agent] Result:"), line
        assert "\x1b" not in line, repr(line)


def test_s15_unsigned_at_strict_is_401(strict_host):
    snap = Snapshot(strict_host)
    response = httpx.post(strict_host.url + "/input", json={"prompt": "calculate 1+1"}, timeout=10)
    assert (response.status_code, error_of(response)) == (401, "unauthorized: signed request required")
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


@pytest.mark.parametrize(
    "signature",
    ["garbage", None, "valid"],
    ids=["S13 garbage signature", "S13 unsigned", "S13+F9 valid signature, uppercase in list"],
)
def test_s13_f9_blacklisted_sender_is_403(strict_host, signature):
    snap = Snapshot(strict_host)
    to = httpx.get(strict_host.url + "/info", timeout=10).json()["address"]
    body = sign_payload(BLOCKED, {"prompt": "calculate 1+1", "to": to, "timestamp": int(time.time())})
    if signature is None:
        body.pop("signature")
    elif signature == "garbage":
        body["signature"] = "zz-not-hex"
    response = httpx.post(strict_host.url + "/input", json=body, timeout=10)
    assert (response.status_code, error_of(response)) == (403, "forbidden: blacklisted")
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


def test_g3_anonymous_listing_shows_no_other_callers_sessions(strict_host):
    """At careful on loopback the operator may list (PROTOCOL D21), so the row runs at strict."""
    key = LISTED
    to = httpx.get(strict_host.url + "/info", timeout=10).json()["address"]
    signed = sign_payload(key, {"prompt": "calculate 2+2", "to": to, "timestamp": int(time.time())})
    created = httpx.post(strict_host.url + "/input", json=signed, timeout=30)
    assert created.status_code == 200, created.text
    listing = httpx.get(strict_host.url + "/sessions", timeout=10)
    assert listing.status_code in (200, 401)  # strict refuses unsigned reads outright
    assert_clean_body(listing)
    assert created.json()["session_id"] not in listing.text and "2+2" not in listing.text


def test_p2_p3_production_mode_json_errors_and_headers(production_host):
    for path in ("/health", "/no-such-route", "/admin/../x?debug=1"):
        response = httpx.get(production_host.url + path, timeout=10)
        assert_clean_body(response)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
        assert response.headers["x-frame-options"] == "DENY"
    assert httpx.get(production_host.url + "/no-such-route", timeout=10).json() == {"error": "not found"}
    bad = httpx.post(
        production_host.url + "/input", content=b"{", headers={"Content-Type": "application/json"}, timeout=10
    )
    assert (bad.status_code, error_of(bad)) == (400, "Invalid JSON")
    secret = production_host.project / ".co" / "secret_key"
    candidates = [p for p in (production_host.project / ".co").iterdir() if "secret" in p.name.lower()]
    assert candidates or secret.exists(), "production mode generated no SECRET_KEY file in .co/"
    for path in candidates:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    # P2: an exception inside the agent is the documented 500, with no detail of it in the body
    to = httpx.get(production_host.url + "/info", timeout=10).json()["address"]
    signed = sign_payload(LISTED, {"prompt": "boom", "to": to, "timestamp": int(time.time())})
    boom = httpx.post(production_host.url + "/input", json=signed, timeout=30)
    assert (boom.status_code, error_of(boom)) == (500, "Unable to run agent")
    assert "secret internal detail" not in boom.text and "Traceback" not in boom.text
    assert httpx.get(production_host.url + "/health", timeout=5).status_code == 200
