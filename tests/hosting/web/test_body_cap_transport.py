"""The body cap holds at daphne's HTTP layer: an oversize body is refused as it arrives, never buffered."""

from __future__ import annotations

import httpx
import psutil

from tests.support.net import exchange

HEAD = b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _temp_files(pid: int) -> int:
    """Open temp files of the host (twisted spools bodies past 100 kB to unlinked files in the temp dir)."""
    proc = psutil.Process(pid)
    return sum(1 for p in [proc, *proc.children(recursive=True)] for f in p.open_files() if "(deleted)" in f.path)


def test_a_declared_gigabyte_is_refused_at_once_without_sending_it(start_host):
    host = start_host(
        "tests.agents:echo_factory", "--trust", "open", "--max-file-size", "1", "--max-files-per-request", "1"
    )
    answer = exchange(host.port, HEAD + b"Content-Length: 1073741824\r\n\r\n" + b'{"prompt": "')
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.endswith(b'{"error": "request body too large"}')
    # answered on the headers (the client sent none of the gigabyte): the 413 itself shows it was not waited for
    assert _temp_files(host.proc.pid) == 0
    assert httpx.post(host.url + "/input", json={"prompt": "still here"}).json()["result"] == "echo: still here"


def test_a_chunked_body_is_cut_off_when_it_passes_the_cap(start_host):
    host = start_host(
        "tests.agents:echo_factory", "--trust", "open", "--max-file-size", "1", "--max-files-per-request", "1"
    )
    chunk = b"a" * (1 << 20)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40))  # 40 MiB, cap ~2.7 MiB
    answer = exchange(host.port, HEAD + b"Transfer-Encoding: chunked\r\n\r\n", body)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"request body too large" in answer
    assert psutil.Process(host.proc.pid).memory_info().rss < 400 * 2**20
    assert httpx.post(host.url + "/input", json={"prompt": "next"}).json()["result"] == "echo: next"


def test_a_body_under_the_cap_is_served(start_host):
    host = start_host(
        "tests.agents:echo_factory", "--trust", "open", "--max-file-size", "1", "--max-files-per-request", "1"
    )
    prompt = "x" * 200_000  # past twisted's 100 kB in-memory threshold, under the cap
    assert httpx.post(host.url + "/input", json={"prompt": prompt}, timeout=30).json()["result"] == "echo: " + prompt
