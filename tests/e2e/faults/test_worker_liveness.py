"""D30 / issue 15.3: SIGKILL one worker of a multi-worker host with turns in flight, the host not restarted.

Its turns must read ``interrupted`` within a few seconds (every live worker sweeps for turns of dead workers),
the turns of the other worker go on, and an interrupted session accepts a new turn.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid

import httpx
import psutil
import pytest

from tests.conftest import NO_TURN_LIMITS
from tests.e2e.faults.conftest import jsonl
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def _latest(project) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for record in jsonl(project)[0]:
        out[record["session_id"]] = record
    return out


def _token_of(pid: int) -> str | None:
    """The worker token whose lock file this process holds open (``.co/live/<token>.lock``)."""
    for f in psutil.Process(pid).open_files():
        if "/.co/live/" in f.path and f.path.endswith(".lock"):
            return os.path.basename(f.path)[: -len(".lock")]
    return None


def test_sigkill_one_worker_its_turns_read_interrupted_without_a_restart(start_host, project):
    host = start_host("tests.agents:slow_factory", "--workers", "2", *NO_TURN_LIMITS)
    supervisor = psutil.Process(host.proc.pid)
    workers = wait_for(
        lambda: (
            [
                c.pid
                for c in supervisor.children()
                if "hosting.serving.worker" in " ".join(c.cmdline()) and _token_of(c.pid)
            ]
            if len(supervisor.children()) >= 2
            else None
        ),
        what="two workers with their locks",
    )
    tokens = {pid: _token_of(pid) for pid in workers}
    sids: list[str] = []
    threads: list[threading.Thread] = []

    def turn(sid: str) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the killed worker's clients lose their connection
            httpx.post(host.url + "/input", json={"prompt": "sleep 25", "session": {"session_id": sid}}, timeout=60)

    def launch(n: int) -> None:
        for _ in range(n):
            sid = str(uuid.uuid4())
            sids.append(sid)
            threads.append(threading.Thread(target=turn, args=(sid,), daemon=True))
            threads[-1].start()

    def spread() -> bool:  # every turn running, on both workers
        latest = _latest(project)
        running = [latest[s] for s in sids if s in latest and latest[s]["status"] == "running"]
        if len(running) < len(sids):
            return False
        if len({r["worker"] for r in running}) == 2:
            return True
        if len(sids) < 40:
            launch(4)
        return False

    launch(8)
    wait_for(spread, timeout=40, what="turns running on both workers")
    victim = next(pid for pid in workers if any(r["worker"] == tokens[pid] for r in _latest(project).values()))
    latest = _latest(project)
    doomed = [s for s in sids if latest[s]["worker"] == tokens[victim]]
    kept = [s for s in sids if latest[s]["worker"] != tokens[victim]]
    assert doomed and kept
    os.kill(victim, signal.SIGKILL)

    def status(sid: str) -> str:
        return httpx.get(f"{host.url}/sessions/{sid}", timeout=10).json()["status"]

    wait_for(
        lambda: all(status(s) == "interrupted" for s in doomed),
        timeout=20,
        what="the killed worker's turns read interrupted",
    )
    assert all(status(s) == "running" for s in kept)  # the live worker's turns are left alone
    counts = {s: [r["status"] for r in jsonl(project)[0] if r["session_id"] == s].count("interrupted") for s in doomed}
    assert set(counts.values()) == {1}, counts  # recorded once, by whichever worker noticed first
    again = httpx.post(
        host.url + "/input", json={"prompt": "sleep 0", "session": {"session_id": doomed[0]}}, timeout=30
    )
    assert again.status_code == 200 and again.json()["status"] == "done", again.text
    host.kill()  # the survivors' 25 s turns need not finish
