"""The limits of ``runhost`` that the ASGI application itself can hold, held by ``create_app`` under uvicorn too
(issue 15 follow-up: a guarantee that holds at one way of serving must hold at all):

- a WebSocket client that never reads is dropped after ``SEND_STALL_SECONDS`` without a byte read (uvicorn's send
  waits for such a client, so before this it held the socket and its sender for good), and its turn is stored;
- request bodies in flight are held to ``bodies_in_flight_mb`` (503 + ``Retry-After``), as daphne's layer does;
- the open-file soft limit is lifted to the hard one at start (FI12).

Not in the application's reach (uvicorn calls it once the headers are in, and hides its connections): the header
deadline and the per-address connection cap; serve with ``runhost``/daphne, or put a proxy in front, for those.
The slow body: ``test_slow_body.py``."""

from __future__ import annotations

import shutil
import sys

import httpx

from tests.conftest import free_port
from tests.hosting.serving.test_entry_points import serve
from tests.hosting.web.test_serving_limits import _nofile, _slow_turn, _start_body, eventually, health, parse
from tests.support.nonreader import flood_a_non_reader

FLOOD_APP = """
from hosting import create_app
from tests.agents import flood_factory

app = create_app(flood_factory, trust="open")
"""
SLOW_APP = FLOOD_APP.replace("flood_factory", "slow_factory")


def _project(tmp_path, app: str, yaml: str):
    folder = tmp_path / "user"
    (folder / ".co").mkdir(parents=True)
    (folder / ".co" / "host.yaml").write_text(yaml)
    (folder / "userapp.py").write_text(app)
    return folder


def _uvicorn(port: int, *prefix: str) -> list[str]:
    return [*prefix, sys.executable, "-m", "uvicorn", "userapp:app", "--port", str(port), "--log-level", "warning"]


def test_create_app_under_uvicorn_drops_a_client_that_never_reads(tmp_path):
    folder = _project(tmp_path, FLOOD_APP, "ws_send_buffer_mb: 1\n")
    port = free_port()
    count, size = 400, 100_000  # 40 MB of events for a client that reads none
    with serve(_uvicorn(port), folder, port) as url:
        log = folder / "serve.log"
        flood_a_non_reader(port, url, log.read_text, count=count, size=size)


def test_create_app_under_uvicorn_holds_bodies_in_flight_to_the_budget(tmp_path):
    yaml = "max_file_size: 1\nmax_files_per_request: 1\nbodies_in_flight_mb: 8\nturn_timeout: 60\n"
    folder = _project(tmp_path, SLOW_APP, yaml)
    port = free_port()
    prefix = [shutil.which("prlimit"), "--nofile=256:4096", "--"] if shutil.which("prlimit") else []
    with serve(_uvicorn(port, *prefix), folder, port) as url:
        first, second = _slow_turn(port), _slow_turn(port)  # two 3 MB bodies whose turns sleep 30 s
        try:
            eventually(lambda: _busy(port), "a third large body while two are being served: 503")
            assert health(port) == 200  # no body: never refused
            small = httpx.post(url + "/input", json={"prompt": "sleep 0"}, timeout=30)
            assert small.json()["result"] == "slept 0.0"  # a small body still fits
        finally:
            first.close()
            second.close()
        if prefix:
            assert _uvicorn_nofile(port) == 4096


def _busy(port: int) -> bool:
    """A body declared 3 MB (of which 100 kB come) is refused 503 at once (uvicorn may write the answer's head and
    body apart: read to the close); admitted, nothing comes."""
    with _start_body(port) as sock:
        sock.settimeout(1)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            if not answer:
                return False
    status, headers, body = parse(answer)
    assert body == {"error": "server busy: too many request bodies in flight, retry later"}
    return status == 503 and headers["retry-after"] == "1"


def _uvicorn_nofile(port: int) -> int:
    """The open-file soft limit of the process listening on ``port``."""
    import psutil

    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return _nofile(conn.pid)
    raise AssertionError("no listener")
