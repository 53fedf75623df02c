"""FI12: the open-file limit. At start the host lifts its soft limit to the hard one; with both at 256,
300 sockets exhaust it: the excess waits or is refused, nothing crashes, and the host serves again once
they close."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import MANAGE, HostProcess
from tests.support.hosts import stop_all
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


class LimitedHost(HostProcess):
    """``runhost`` started under ``prlimit --nofile=SOFT:HARD`` (prlimit execs it: same pid)."""

    def __init__(self, project, nofile: str, *args: str) -> None:
        super().__init__(project, *args)
        self.nofile = nofile

    def start(self, timeout: float = 40) -> LimitedHost:
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            pytest.skip("prlimit (util-linux) is not installed")
        cmd = [
            prlimit,
            f"--nofile={self.nofile}",
            "--",
            sys.executable,
            str(MANAGE),
            "runhost",
            *self.args,
            "--port",
            str(self.port),
            "--no-relay",
        ]
        self.launch(
            cmd,
            cwd=self.project,
            env=self.env,
            log_path=self.log_path,
            ready_url=self.url + "/health",
            timeout=timeout,
            what="host",
        )
        return self


def _nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file line in /proc/<pid>/limits")


@pytest.fixture
def limited(project):
    hosts: list[LimitedHost] = []

    def start(nofile: str) -> LimitedHost:
        host = LimitedHost(project, nofile, "tests.agents:echo_factory")
        hosts.append(host)
        return host.start()

    yield start
    stop_all(hosts)


def test_the_soft_limit_is_raised_to_the_hard_limit_at_start(limited):
    host = limited("256:4096")
    assert _nofile(host.proc.pid) == (4096, 4096)
    assert "raised the open-file limit from 256 to 4096" in host.output()


def test_300_sockets_over_a_256_limit_do_not_crash_the_host_and_it_recovers(limited):
    host = limited("256:256")
    assert _nofile(host.proc.pid) == (256, 256)
    held: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.socket()
            sock.settimeout(2)
            with contextlib.suppress(OSError):  # a full backlog may refuse: also fine
                sock.connect(("127.0.0.1", host.port))
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # unfinished request: held open
            held.append(sock)
        wait_for(lambda: len(os.listdir(f"/proc/{host.proc.pid}/fd")) >= 250, 10, "the host's descriptors are used up")
        with contextlib.suppress(httpx.HTTPError):  # meanwhile a new client waits or is turned away, quickly
            assert httpx.get(host.url + "/health", timeout=3).status_code in (200, 503)
        assert host.proc.poll() is None, host.output()[-3000:]
    finally:
        for sock in held:
            sock.close()

    def serves() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(host.url + "/health", timeout=2).status_code == 200
        return False

    wait_for(serves, 20, "the host answers /health again after the sockets closed")
    turn = httpx.post(host.url + "/input", json={"prompt": "after"}, timeout=20)
    assert turn.status_code == 200 and turn.json()["result"] == "echo: after", turn.text
    assert host.proc.poll() is None
