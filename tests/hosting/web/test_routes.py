"""GET routes, CORS, session records over HTTP, and 100 concurrent slow turns."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import NO_TURN_LIMITS, HostProcess


@pytest.fixture(scope="module")
def slow(module_hosts) -> HostProcess:
    return module_hosts("tests.agents:slow_factory", *NO_TURN_LIMITS, name="slow")  # 100 turns at once


def test_health_info_index(demo):
    health = httpx.get(demo.url + "/health").json()
    assert health["status"] == "healthy" and health["agent"] == "demo"
    assert isinstance(health["uptime"], int | float)
    r = httpx.get(demo.url + "/info")
    assert r.headers["cache-control"] == "no-store"
    info = r.json()
    for key in ("name", "address", "tools", "model", "trust", "version", "accepted_inputs"):
        assert key in info
    assert "calculate" in info["tools"] and info["trust"] == "careful"
    assert info["accepted_inputs"] == {
        "text": True,
        "images": True,
        "files": {"max_file_size_mb": 10, "max_files_per_request": 10},
    }
    index = httpx.get(demo.url + "/")
    assert index.status_code == 200 and index.json()


def test_unknown_path_is_json_404(demo):
    r = httpx.get(demo.url + "/no/such/path")
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}


def test_options_preflight_is_204_with_cors(demo):
    r = httpx.options(demo.url + "/input")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert "content-type" in r.headers["access-control-allow-headers"].lower()
    assert httpx.get(demo.url + "/health").headers["access-control-allow-origin"] == "*"
    # D22: an allowed browser origin is echoed, a foreign one refused
    local = httpx.options(demo.url + "/input", headers={"Origin": "http://localhost:3000"})
    assert local.status_code == 204 and local.headers["access-control-allow-origin"] == "http://localhost:3000"
    foreign = httpx.options(demo.url + "/input", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert foreign.json() == {"error": "forbidden: origin not allowed"}


def test_unknown_session_and_prefix_are_404(demo):
    done = httpx.post(demo.url + "/input", json={"prompt": "calculate 3*3"}).json()
    sid = done["session_id"]
    assert httpx.get(f"{demo.url}/sessions/{sid}").json()["status"] == "done"
    for bad in ("00000000-0000-0000-0000-000000000000", sid[:8]):
        r = httpx.get(f"{demo.url}/sessions/{bad}")
        assert r.status_code == 404
        assert r.json() == {"error": "not found"}


def test_sessions_listing_newest_first_with_limit(module_hosts):
    host = module_hosts("tests.agents:echo_factory", name="listing")
    ids = []
    for i in range(3):
        ids.append(httpx.post(host.url + "/input", json={"prompt": str(i)}).json()["session_id"])
        time.sleep(1.05)  # `created` has whole-second resolution; order must be observable
    listing = httpx.get(host.url + "/sessions").json()["sessions"]
    assert [s["session_id"] for s in listing] == ids[::-1]
    assert all(set(s) == {"session_id", "status", "created"} for s in listing)
    limited = httpx.get(host.url + "/sessions", params={"limit": 2}).json()["sessions"]
    assert [s["session_id"] for s in limited] == ids[::-1][:2]
    assert httpx.get(host.url + "/sessions", params={"limit": "x"}).status_code == 400


def test_session_record_running_then_done(slow):
    async def scenario():
        async with httpx.AsyncClient(base_url=slow.url, timeout=30) as client:
            task = asyncio.create_task(client.post("/input", json={"prompt": "sleep 2"}))
            deadline = time.monotonic() + 10
            running = None
            while running is None and time.monotonic() < deadline:
                for s in (await client.get("/sessions")).json()["sessions"]:
                    if s["status"] == "running":
                        running = s["session_id"]
                await asyncio.sleep(0.05)
            assert running, "never saw a running record"
            record = (await client.get(f"/sessions/{running}")).json()
            assert record["status"] == "running" and record["prompt"] == "sleep 2"
            response = (await task).json()
            assert response["session_id"] == running
            final = (await client.get(f"/sessions/{running}")).json()
            assert final["status"] == "done" and final["result"] == "slept 2.0"

    asyncio.run(scenario())


def test_hundred_concurrent_slow_turns_and_health_stays_responsive(slow):
    """/health answers while 100 slow turns are in flight, not after them (its latency is bench/run.py's L1)."""

    async def scenario():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=slow.url, timeout=60, limits=limits) as client:
            turns = [asyncio.create_task(client.post("/input", json={"prompt": "sleep 2"})) for _ in range(100)]
            deadline = time.monotonic() + 20
            while not any(s["status"] == "running" for s in (await client.get("/sessions")).json()["sessions"]):
                assert time.monotonic() < deadline, "no turn ever started"
                await asyncio.sleep(0.05)
            in_flight = []
            for _ in range(5):
                r = await client.get("/health")
                assert r.status_code == 200 and r.json()["status"] == "healthy"
                in_flight.append(sum(not t.done() for t in turns))
            return await asyncio.gather(*turns), in_flight

    results, in_flight = asyncio.run(scenario())
    # every /health answer came while turns were still running: it was not queued behind them
    assert all(in_flight), in_flight
    assert [r.status_code for r in results] == [200] * 100
    assert all(r.json()["status"] == "done" for r in results)
    assert len({r.json()["session_id"] for r in results}) == 100
