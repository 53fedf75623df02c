"""FI8, FI9: clients that vanish mid-turn, and agents that raise, overrun ``turn_timeout`` or never return.

Already covered elsewhere and not repeated here (FI9): a factory raising per request → 500
"Unable to run agent" + record ``failed`` (tests/hosting/web/test_input.py::test_factory_raising_per_request_is_500),
a factory raising at start-up (…::test_factory_raising_at_start_stops_the_host), dict/None/bytes results
coerced to strings (…::test_odd_results_are_coerced_to_strings).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.conftest import NO_TURN_LIMITS
from tests.e2e.faults.conftest import healthy, statuses
from tests.support.wait import wait_for
from tests.support.ws import ws_turn

pytestmark = pytest.mark.slow


def test_factory_raising_over_websocket_is_an_error_frame_and_a_failed_record(start_host, project):
    host = start_host("tests.co_agents:flaky_factory", *NO_TURN_LIMITS)
    frame = asyncio.run(ws_turn(host.ws_url, "x"))
    assert frame["type"] == "ERROR" and frame["message"] == "Unable to run agent", frame
    assert "factory" not in json.dumps(frame)  # no internal detail leaks
    assert statuses(project)[frame["session_id"]] == ["running", "failed"]
    assert healthy(host.url)


async def _stuck_turns(host, n: int, seconds: float) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(base_url=host.url, timeout=30, limits=limits) as client:
        stuck = [asyncio.create_task(client.post("/input", json={"prompt": f"sleep {seconds}"})) for _ in range(n)]
        await asyncio.sleep(0.8)  # all 20 are inside the agent now
        fresh = await client.post("/input", json={"prompt": "sleep 0.1"})
        pending_after_fresh = sum(not t.done() for t in stuck)
        for _ in range(5):
            assert await asyncio.to_thread(healthy, host.url)
        answers = await asyncio.gather(*stuck)
    assert fresh.status_code == 200 and fresh.json()["status"] == "done", fresh.text
    assert pending_after_fresh, "the fresh turn waited for the stuck ones"
    return answers


def test_turn_timeout_fails_the_turn_and_stuck_agents_block_nothing(start_host, project):
    (project / ".co").mkdir()
    (project / ".co/host.yaml").write_text("turn_timeout: 3\n")
    host = start_host("tests.agents:slow_factory", *NO_TURN_LIMITS)
    started = time.monotonic()
    answers = asyncio.run(_stuck_turns(host, 20, 6))
    for r in answers:
        assert r.status_code == 500 and r.json()["error"] == "turn timed out", r.text
    frame = asyncio.run(ws_turn(host.ws_url, "sleep 6"))
    assert frame["type"] == "ERROR" and frame["message"] == "turn timed out", frame
    time.sleep(max(0.0, 7.5 - (time.monotonic() - started)))  # the stuck threads have returned by now
    seen = statuses(project)
    timed_out = [sid for sid, seq in seen.items() if seq == ["running", "failed"]]
    assert len(timed_out) == 21, seen  # 20 HTTP + 1 WS; a late return never appends `done`
    records = {r["session_id"]: r for r in httpx.get(host.url + "/sessions", params={"limit": 100}).json()["sessions"]}
    for sid in timed_out:
        body = httpx.get(f"{host.url}/sessions/{sid}").json()
        assert body["status"] == "failed", body
        assert body.get("error") == "turn timed out", body
    assert records  # listing works
    assert httpx.post(host.url + "/input", json={"prompt": "sleep 0.1"}).status_code == 200


async def _disconnect_mid_turn(host, project, http_n: int, ws_n: int) -> None:
    """Every client starts a 3 s turn; once all 100 ``running`` lines are written, every client hangs up."""
    go = asyncio.Event()

    async def http_client() -> None:
        async with httpx.AsyncClient(base_url=host.url, timeout=30) as client:
            task = asyncio.create_task(client.post("/input", json={"prompt": "sleep 3"}))
            await go.wait()
            task.cancel()  # closes the connection mid-turn
            await asyncio.gather(task, return_exceptions=True)

    async def ws_client() -> None:
        sock = await websockets.connect(host.ws_url, ping_interval=None)
        await sock.send(json.dumps({"type": "INPUT", "prompt": "sleep 3"}))
        await go.wait()
        sock.transport.abort()  # no close handshake: the peer just goes away

    async def starter() -> None:
        deadline = time.monotonic() + 15
        while len(statuses(project)) < http_n + ws_n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        go.set()

    await asyncio.gather(starter(), *[http_client() for _ in range(http_n)], *[ws_client() for _ in range(ws_n)])


def test_100_clients_disconnecting_mid_turn_still_get_done_records(start_host, project):
    host = start_host("tests.agents:slow_factory", *NO_TURN_LIMITS)
    asyncio.run(_disconnect_mid_turn(host, project, 50, 50))

    def all_done():
        seen = statuses(project)
        return len(seen) == 100 and all(seq[-1] == "done" for seq in seen.values()) and seen

    seen = wait_for(all_done, 20, "100 records done after their clients left")
    assert all(seq == ["running", "done"] for seq in seen.values()), seen
    time.sleep(0.5)
    assert "took too long to shut down" not in host.output()
    assert healthy(host.url)


async def _hang_up_at(host, seconds: float, http_n: int, ws_n: int) -> None:
    """Clients hang up ``seconds`` after sending, whether or not their turn has started yet."""

    async def http_client() -> None:
        async with httpx.AsyncClient(base_url=host.url, timeout=30) as client:
            task = asyncio.create_task(client.post("/input", json={"prompt": "sleep 2"}))
            await asyncio.sleep(seconds)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def ws_client() -> None:
        sock = await websockets.connect(host.ws_url, ping_interval=None)
        await sock.send(json.dumps({"type": "INPUT", "prompt": "sleep 2"}))
        await asyncio.sleep(seconds)
        sock.transport.abort()

    await asyncio.gather(*[http_client() for _ in range(http_n)], *[ws_client() for _ in range(ws_n)])


def test_hanging_up_while_the_turn_starts_never_strands_a_running_record(start_host, project):
    """Regression: an HTTP client leaving while its ``running`` line was written left it ``running`` forever."""
    host = start_host("tests.agents:slow_factory", *NO_TURN_LIMITS)
    asyncio.run(_hang_up_at(host, 0.7, 50, 50))

    def settled():
        seen = statuses(project)
        return all(seq[-1] == "done" for seq in seen.values()) and seen

    seen = wait_for(settled, 15, f"every started turn ends done: {statuses(project)}")
    assert all(seq == ["running", "done"] for seq in seen.values()), seen
