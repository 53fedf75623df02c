"""daphne's connection limits (``hosting.serving.limits``, issue 15.5/15.10) under every entry point that serves with it:
a header deadline (slowloris, HARDENING L8), open connections per address, HTTP and WebSocket together, a
budget for the request bodies in flight, and the open-file limit lifted at start (FI12)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import NO_TURN_LIMITS, REPO, ServerProcess, free_port, host_env
from tests.support.hosts import stop_all
from tests.support.net import drip_until_answered
from tests.support.wait import wait_for

OTHER = "127.0.0.2"  # loopback answers on all of 127/8: a second client address on this machine


def open_socket(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or a 10 s silence, which no test here expects)."""
    answer = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def parse(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ", 2)[1]), headers, json.loads(body) if body else {}


def trickle(port: int, *, limit: float = 60) -> bytes:
    """A slowloris client: a request line, then one header line every 0.2 s until the server answers."""
    with open_socket(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        return drip_until_answered(sock, b"X-Slow: 1\r\n", limit=limit)


def health(port: int, source: str = "127.0.0.1") -> int:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
        return client.get(f"http://127.0.0.1:{port}/health").status_code


def eventually(check, what: str) -> bool:
    """``check`` holds within 30 s (connection errors while the server settles count as "not yet")."""
    return wait_for(check, 30, what, interval=0.1, ignore=(httpx.HTTPError, OSError))


# --- runhost --------------------------------------------------------------------------------------------------


def test_headers_that_trickle_past_the_deadline_get_408_and_a_close(start_host):
    host = start_host("tests.agents:echo_factory", "--trust", "open", "--header-timeout", "1")
    status, headers, body = parse(trickle(host.port))
    assert (status, body) == (408, {"error": "request headers took too long"})
    assert headers["connection"] == "close"
    assert health(host.port) == 200


def test_a_slow_turn_and_a_slow_body_are_not_cut_by_the_header_deadline(start_host):
    host = start_host("tests.agents:slow_factory", "--trust", "open", "--header-timeout", "1")
    with open_socket(host.port) as sock:
        body = json.dumps({"prompt": "sleep 2.5"}).encode()
        sock.sendall(
            b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        time.sleep(1.5)  # the body comes after the header deadline would have passed
        sock.sendall(body)
        status, _, answer = parse(read_answer(sock))
    assert status == 200 and answer["status"] == "done", (answer, host.output()[-3000:])


def test_one_address_cannot_take_every_connection_and_health_answers_throughout(start_host):
    host = start_host(
        "tests.agents:echo_factory",
        "--trust",
        "open",
        "--max-connections-per-ip",
        "20",
        "--header-timeout",
        "300",
        *NO_TURN_LIMITS,
    )
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(host.ws_url, open_timeout=10)) for _ in range(5)]  # WS count too
        for _ in range(15):
            sock = stack.enter_context(open_socket(host.port))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # headers never finish
        eventually(lambda: _refused(host.port), "the 21st: 429 at once")
        flood = []
        for _ in range(200):  # many more from the same address: each refused, none held
            sock = open_socket(host.port)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            flood.append(sock)
        answers = [parse(read_answer(sock)) for sock in flood]
        for sock in flood:
            sock.close()
        assert {(status, body["error"]) for status, _, body in answers} == {
            (429, "too many connections from this address")
        }
        assert all(headers["retry-after"] == "1" for _, headers, _ in answers)
        with pytest.raises(InvalidStatus) as refused:
            connect(host.ws_url, open_timeout=10)
        assert refused.value.response.status_code == 429
        # another address is served the whole time: /health, /info and a turn
        assert health(host.port, OTHER) == 200
        with httpx.Client(transport=httpx.HTTPTransport(local_address=OTHER), timeout=30) as client:
            assert client.get(host.url + "/info").status_code == 200
            assert client.post(host.url + "/input", json={"prompt": "hi"}).json()["result"] == "echo: hi"
        sockets[0].send(json.dumps({"type": "INPUT", "prompt": "still open"}))  # a held WebSocket still works
        while (frame := json.loads(sockets[0].recv(timeout=30)))["type"] != "OUTPUT":
            pass
        assert frame["result"] == "echo: still open"
    eventually(lambda: health(host.port) == 200, "the address is served again once they close")


def _refused(port: int) -> bool:
    with open_socket(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = parse(read_answer(sock))
    return status == 429 and body == {"error": "too many connections from this address"}


def test_trusted_proxies_are_not_counted(start_host):
    host = start_host(
        "tests.agents:echo_factory",
        "--trust",
        "open",
        "--max-connections-per-ip",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
        *NO_TURN_LIMITS,
    )
    held = [open_socket(host.port) for _ in range(5)]
    try:
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert health(host.port) == 200
    finally:
        for sock in held:
            sock.close()


BODY = 3_000_000  # under the ~3.7 MB cap of one 1 MB file; three of them pass an 8 MB budget
BUDGET_HOST = (
    "tests.agents:slow_factory",
    "--trust",
    "open",
    "--max-file-size",
    "1",
    "--max-files-per-request",
    "1",
    *NO_TURN_LIMITS,
)


@pytest.fixture
def quick_stop(project: Path) -> None:
    """The 30 s turns these start are not waited for when the host stops."""
    (project / ".co").mkdir(exist_ok=True)
    (project / ".co" / "host.yaml").write_text("shutdown_grace: 0\n")


def _start_body(port: int) -> socket.socket:
    """A body declared BODY bytes long, of which only the first 100 kB come."""
    sock = open_socket(port)
    sock.sendall(
        b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % BODY + b'{"prompt": "' + b"a" * 100_000
    )
    return sock


def _slow_turn(port: int) -> socket.socket:
    """A whole BODY-sized request whose turn sleeps 30 s: its body is held while the turn runs."""
    sock = open_socket(port)
    head = b'{"prompt": "sleep 30", "pad": "'
    body = head + b"a" * (BODY - len(head) - 2) + b'"}'
    sock.sendall(
        b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    return sock


def test_bodies_in_flight_past_the_budget_get_503_and_the_host_stays_up(start_host, quick_stop):
    host = start_host(*BUDGET_HOST, "--bodies-in-flight-mb", "8")
    first, second = _slow_turn(host.port), _slow_turn(host.port)
    try:
        eventually(lambda: _busy(host.port), "a third large body while two are being served")
        assert health(host.port) == 200  # no body: never refused
        small = httpx.post(host.url + "/input", json={"prompt": "sleep 0"}, timeout=30)
        assert small.json()["result"] == "slept 0.0"  # a small body still fits
    finally:
        first.close()
        second.close()
    # once their clients are gone, a large body is read again
    eventually(lambda: not _busy(host.port), "not _busy(host.port)")


def test_a_body_that_trickles_in_holds_none_of_the_budget(start_host, quick_stop):
    """Counted once the whole body is in: clients that declare large bodies and send them a byte at a time
    cannot hold the budget for everyone (twisted keeps a body on disk until its last byte)."""
    host = start_host(*BUDGET_HOST, "--bodies-in-flight-mb", "8")
    trickling = [_start_body(host.port) for _ in range(5)]  # 15 MB declared, 0.5 MB sent
    try:
        assert health(host.port) == 200
        assert not _busy(host.port)
        with _slow_turn(host.port) as sock:  # a whole large body is still served
            sock.settimeout(5)
            with pytest.raises(TimeoutError):
                sock.recv(1)  # running its 30 s turn, not refused
    finally:
        for sock in trickling:
            sock.close()


def _busy(port: int) -> bool:
    with _start_body(port) as sock:
        sock.settimeout(1)
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            return False  # admitted: reading its body
    status, headers, body = parse(answer)
    assert body == {"error": "server busy: too many request bodies in flight, retry later"}
    return status == 503 and headers["retry-after"] == "1"


def test_a_chunked_body_is_held_to_the_budget_as_it_arrives(start_host, quick_stop):
    host = start_host(*BUDGET_HOST, "--bodies-in-flight-mb", "4")
    first = _slow_turn(host.port)  # 3 MB of the 4 MB budget, while its turn runs
    try:
        eventually(lambda: _busy(host.port), "_busy(host.port)")
        with open_socket(host.port) as sock:
            sock.sendall(
                b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"a" * 500_000
            with contextlib.suppress(OSError):
                for _ in range(6):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            status, _, body = parse(read_answer(sock))
        assert status == 503 and "in flight" in body["error"]
    finally:
        first.close()
    assert health(host.port) == 200


def test_bodies_in_flight_below_the_request_cap_is_refused_at_start(project):
    from common.errors import ConfigError
    from hosting.core.config import load_config

    with pytest.raises(ConfigError, match="bodies_in_flight_mb must be at least the request cap"):
        load_config({"project_dir": str(project), "bodies_in_flight_mb": 1.0}, environ={})
    assert load_config({"project_dir": str(project)}, environ={}).bodies_in_flight_mb == 512.0
    big = load_config({"project_dir": str(project), "max_file_size": 100}, environ={})
    assert big.bodies_in_flight_mb == big.max_request_mb  # one maximum-size body always fits


# --- the other entry points: ``daphne connectonion_site.asgi:application`` and ``runrelay`` ----------------------


class Served(ServerProcess):
    def __init__(self, cmd: list[str], folder: Path, port: int, env: dict[str, str]) -> None:
        self.cmd, self.folder, self.port, self.env = cmd, folder, port, env

    def start(self) -> Served:
        self.launch(
            self.cmd,
            cwd=self.folder,
            env=self.env,
            log_path=self.folder / f"served-{self.port}.log",
            ready_url=f"http://127.0.0.1:{self.port}/health",
            timeout=40,
            what=self.cmd[2],
        )
        return self


@pytest.fixture
def served(tmp_path: Path) -> Iterator:
    started: list[Served] = []

    def start(cmd: list[str], folder: Path, port: int, env: dict[str, str]) -> Served:
        server = Served(cmd, folder, port, env).start()
        started.append(server)
        return server

    yield start
    stop_all(started)


def _assert_header_deadline_and_cap_of_3(port: int) -> None:
    """A header trickle gets 408 after the 1 s deadline; three half-sent requests from one address use up its
    cap of 3 (a fourth is refused) while another address is still served."""
    status, _, body = parse(trickle(port))
    assert (status, body) == (408, {"error": "request headers took too long"})
    held = [open_socket(port) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        eventually(lambda: _refused(port), "_refused(port)")
        assert health(port, OTHER) == 200
    finally:
        for sock in held:
            sock.close()


def _nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file line")


def test_the_daphne_command_serves_with_the_same_limits(served, project):
    (project / ".co").mkdir()
    (project / ".co" / "host.yaml").write_text("header_timeout: 1\nmax_connections_per_ip: 3\n")
    port = free_port()
    prefix = [shutil.which("prlimit"), "--nofile=256:4096", "--"] if shutil.which("prlimit") else []
    cmd = [
        *prefix,
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "connectonion_site.asgi:application",
    ]
    server = served(cmd, project, port, host_env(CONNECTONION_AGENT="tests.agents:echo_factory", PYTHONPATH=str(REPO)))
    if prefix:
        assert _nofile(server.proc.pid) == 4096
    _assert_header_deadline_and_cap_of_3(port)


def test_runrelay_serves_with_a_header_deadline_and_a_connection_cap(served, tmp_path):
    port = free_port()
    cmd = [
        sys.executable,
        str(REPO / "manage.py"),
        "runrelay",
        "--port",
        str(port),
        "--header-timeout",
        "1",
        "--max-connections-per-ip",
        "3",
    ]
    env = host_env(PYTHONPATH=str(REPO))
    served(cmd, tmp_path, port, {k: v for k, v in env.items() if not k.startswith("RELAY_")})
    _assert_header_deadline_and_cap_of_3(port)


def _ws_message_begun(port: int, size: int, sent: int) -> socket.socket:
    """A raw WebSocket whose one text message declares ``size`` bytes, of which ``sent`` come."""
    sock = open_socket(port)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    mask = b"\x00\x00\x00\x00"  # a zero mask leaves the payload as it is
    with contextlib.suppress(OSError):  # refused while sending: the close frame is in the receive buffer
        sock.sendall(b"\x81\xff" + size.to_bytes(8, "big") + mask + b"a" * sent)
    return sock


def test_websocket_messages_count_in_the_same_budget(start_host, quick_stop):
    host = start_host(*BUDGET_HOST, "--bodies-in-flight-mb", "8")
    # autobahn holds what has arrived of a message in memory: 2.9 MB of each of these is held
    first, second = (_ws_message_begun(host.port, BODY, 2_900_000) for _ in range(2))
    try:
        eventually(lambda: _busy(host.port), "an HTTP body does not fit beside them")
        with _ws_message_begun(host.port, BODY, 0) as third:  # nor does a third message: refused on its header
            frame = read_answer(third)  # the server's close frame, then the close
        assert frame[:1] == b"\x88" and int.from_bytes(frame[2:4], "big") == 1013, frame
        assert b"too many request bodies in flight" in frame
        assert health(host.port) == 200
        with connect(host.ws_url, open_timeout=10) as ws:  # a small message still fits
            ws.send(json.dumps({"type": "INPUT", "prompt": "sleep 0"}))
            while (answer := json.loads(ws.recv(timeout=30)))["type"] != "OUTPUT":
                pass
            assert answer["result"] == "slept 0.0"
    finally:
        first.close()
        second.close()
    eventually(lambda: not _busy(host.port), "their bytes are given back when they close")
