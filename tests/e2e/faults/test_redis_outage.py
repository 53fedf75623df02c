"""FI4, FI5: the Redis behind ``--workers 2 --redis-url`` killed (-9) or frozen (SIGSTOP) while HTTP and
WebSocket clients run turns. Our own ``redis-server`` on a free port; the shared one is never touched.

Pass criteria (HARDENING §4, windows shortened to 4 s): no request hangs > 6 s; HTTP turns keep working or
answer 503 "service unavailable"; a new WebSocket is served or refused cleanly (close 1013, never an HTTP 500);
service resumes without a process restart; no record is written twice; /health answers 200 throughout. How fast
the refusals and /health answer is printed as a figure, not asserted (a shared 2-core machine is no bench).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import pytest
import websockets

from tests.conftest import HostProcess
from tests.e2e.faults.conftest import TERMINAL, jsonl, statuses

pytestmark = [pytest.mark.slow, pytest.mark.redis]

HANG = 6.0  # no request may take longer
# The per-identity rate stays on (its buckets live in the same Redis) but far above what these clients send.
LIMITS = (
    "--rate-limit-per-minute",
    "600000",
    "--rate-limit-burst",
    "100000",
    "--max-turns-per-identity",
    "0",
    "--max-turns-per-ip",
    "0",
)


@dataclass
class Log:
    http: list[tuple[float, float, str]] = field(default_factory=list)  # (start, seconds, outcome)
    ws: list[tuple[float, float, str]] = field(default_factory=list)
    health: list[tuple[float, float]] = field(default_factory=list)


async def _http_loop(host: HostProcess, log: Log, t0: float, until: float) -> None:
    async with httpx.AsyncClient(base_url=host.url, timeout=HANG + 4) as client:
        while time.monotonic() < until:
            start = time.monotonic()
            try:
                r = await client.post("/input", json={"prompt": "sleep 0.3"})
                body = r.json()
                outcome = f"{r.status_code} {body.get('error') or body.get('status')}"
            except (httpx.HTTPError, ValueError) as exc:
                outcome = f"exc {type(exc).__name__}"
            log.http.append((start - t0, time.monotonic() - start, outcome))
            await asyncio.sleep(0.05)


async def _ws_loop(host: HostProcess, log: Log, t0: float, until: float) -> None:
    while time.monotonic() < until:
        start = time.monotonic()
        try:
            async with asyncio.timeout(HANG + 4):
                async with websockets.connect(host.ws_url, ping_interval=None, open_timeout=HANG + 4) as sock:
                    await sock.send(json.dumps({"type": "INPUT", "prompt": "sleep 0.3"}))
                    while True:
                        frame = json.loads(await sock.recv())
                        if frame.get("type") in ("OUTPUT", "ERROR"):
                            outcome = frame["type"] if frame["type"] == "OUTPUT" else f"ERROR {frame.get('message')}"
                            break
        except websockets.ConnectionClosed as exc:
            outcome = f"close {exc.rcvd.code if exc.rcvd else None}"
        except websockets.InvalidStatus as exc:
            outcome = f"http {exc.response.status_code}"
        except (OSError, TimeoutError) as exc:
            outcome = f"exc {type(exc).__name__}"
        log.ws.append((start - t0, time.monotonic() - start, outcome))
        await asyncio.sleep(0.05)


async def _health_loop(host: HostProcess, log: Log, t0: float, until: float) -> None:
    async with httpx.AsyncClient(base_url=host.url, timeout=HANG + 4) as client:
        while time.monotonic() < until:
            start = time.monotonic()
            r = await client.get("/health")
            assert r.status_code == 200
            log.health.append((start - t0, time.monotonic() - start))
            await asyncio.sleep(0.1)


async def _outage(
    host: HostProcess, fault, repair, *, before: float = 1.5, outage: float = 4.0, after: float = 4.5
) -> tuple[Log, float]:
    log = Log()
    t0 = time.monotonic()
    until = t0 + before + outage + after
    loops = [_http_loop(host, log, t0, until) for _ in range(6)] + [_ws_loop(host, log, t0, until) for _ in range(4)]
    loops.append(_health_loop(host, log, t0, until))

    async def inject() -> None:
        await asyncio.sleep(before)
        fault()
        await asyncio.sleep(outage)
        await asyncio.to_thread(repair)

    await asyncio.gather(inject(), *loops)
    return log, before + outage


def _check(host: HostProcess, project, log: Log, back_at: float, pids_before: set[int]) -> None:
    summary = {
        "http": sorted({o for _, _, o in log.http}),
        "ws": sorted({o for _, _, o in log.ws}),
        "slowest_http": max(s for _, s, _ in log.http),
        "slowest_ws": max(s for _, s, _ in log.ws),
        "health_max_ms": round(max(s for _, s in log.health) * 1000),
    }
    print(summary)
    for start, seconds, outcome in log.http:
        assert seconds < HANG, (start, seconds, outcome)
        assert outcome in ("200 done", "503 service unavailable"), (start, seconds, outcome)
    for start, seconds, outcome in log.ws:
        assert seconds < HANG, (start, seconds, outcome)
        assert outcome in ("OUTPUT", "close 1013", "ERROR service unavailable"), (start, seconds, outcome)
    late = [o for s, _, o in log.http + log.ws if s > back_at + 3.0]  # resumed without a restart
    assert late and sum(o in ("200 done", "OUTPUT") for o in late) >= 0.99 * len(late), late
    # /health answered 200 all through the outage (the loop asserts each answer); how fast is a figure, printed
    # above, not an assertion on a shared machine
    assert any(back_at - 4.0 <= start <= back_at for start, _ in log.health), summary
    assert _worker_pids(host) == pids_before, "a worker was restarted"
    assert _bridge_lines(host)[0], "the bridge never noticed the outage"
    # Each worker's bridge logs one warning when it stops using Redis and one line when its next send or
    # group change (after a 5 s pause) goes through again: a little more traffic brings every one back.
    asyncio.run(_until_bridges_resume(host))
    _records, torn = jsonl(project)
    assert torn == []
    for sid, seq in statuses(project).items():
        assert sum(s in TERMINAL for s in seq) == 1 and seq[-1] in TERMINAL, (sid, seq)


def _bridge_lines(host: HostProcess) -> tuple[list[str], list[str]]:
    bridge = [line for line in host.output().splitlines() if "bridge:" in line]
    # the send/group side's warning (its receive loop logs its own retries, which need no "again" line)
    failed = [line for line in bridge if "failed" in line and "answers again (next try" in line]
    resumed = [line for line in bridge if "the channel layer answers again;" in line]
    return failed, resumed


async def _until_bridges_resume(host: HostProcess, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        failed, resumed = _bridge_lines(host)
        if len(resumed) >= len(failed):
            return
        assert time.monotonic() < deadline, ("a bridge never used Redis again", failed, resumed)
        log = Log()
        t0 = time.monotonic()
        await asyncio.gather(*(_ws_loop(host, log, t0, t0 + 1.0) for _ in range(4)))
        assert all(o == "OUTPUT" for _, _, o in log.ws), log.ws


def _worker_pids(host: HostProcess) -> set[int]:
    from pathlib import Path

    children = Path(f"/proc/{host.proc.pid}/task/{host.proc.pid}/children").read_text().split()
    return {int(c) for c in children}


@pytest.fixture
def redis_host(own_redis, project):
    host = HostProcess(project, "tests.agents:slow_factory", "--workers", "2", "--redis-url", own_redis.url, *LIMITS)
    host.start()
    try:
        yield host
    finally:
        host.stop()


def test_redis_killed_for_4_seconds(redis_host, own_redis, project):
    pids = _worker_pids(redis_host)
    log, back_at = asyncio.run(_outage(redis_host, own_redis.kill, own_redis.restart))
    _check(redis_host, project, log, back_at, pids)


def test_redis_frozen_for_4_seconds(redis_host, own_redis, project):
    pids = _worker_pids(redis_host)
    log, back_at = asyncio.run(_outage(redis_host, own_redis.pause, own_redis.resume))
    _check(redis_host, project, log, back_at, pids)
