"""/ws figures against a real host process on loopback (demo agent, no API key):

* turn round trips per second with 8 connections each sending INPUT after INPUT;
* event latency (the event's ``ts``, stamped when the agent reaches that step, to client receipt), p50/p99,
  over the demo's 'count to 50' (≈200 events);
* memory per idle WebSocket: host RSS (process and children, psutil) with 1,000 idle handshaken sockets
  minus the RSS before, divided by 1,000.

    .venv/bin/python bench/ws_bench.py [--seconds 5] [--connections 8] [--idle 1000] [--latency-turns 5]

Prints a table; no asserts. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import websockets  # noqa: E402

from tests.conftest import HostProcess  # noqa: E402

TIMEOUT = 30


async def recv(ws, timeout: float = TIMEOUT) -> dict:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame.get("type") == "PING":
            await ws.send('{"type":"PONG"}')
            continue
        return frame


async def until_terminal(ws, on_frame=None) -> dict:
    while True:
        frame = await recv(ws)
        if on_frame is not None:
            on_frame(frame)
        if frame["type"] in ("OUTPUT", "ERROR"):
            return frame


async def round_trips(url: str, connections: int, seconds: float) -> tuple[int, int, float]:
    """Turns completed by ``connections`` sockets in ``seconds``; also counts ERROR terminals."""
    done = errors = 0
    end = time.monotonic() + seconds

    async def one() -> None:
        nonlocal done, errors
        async with websockets.connect(url, ping_interval=None) as ws:
            await ws.send(json.dumps({"type": "CONNECT"}))
            while (await recv(ws))["type"] != "AGENT_PROFILE":
                pass
            while time.monotonic() < end:
                await ws.send(json.dumps({"type": "INPUT", "prompt": "calculate (2+3)*7"}))
                terminal = await until_terminal(ws)
                if terminal["type"] == "OUTPUT":
                    done += 1
                else:
                    errors += 1

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    return done, errors, time.monotonic() - started


async def event_latency(url: str, turns: int) -> list[float]:
    samples: list[float] = []

    def stamp(frame: dict) -> None:
        if isinstance(frame.get("ts"), float) and frame["type"] not in ("OUTPUT", "ERROR"):
            samples.append((time.time() - frame["ts"]) * 1000)

    async with websockets.connect(url, ping_interval=None) as ws:
        for _ in range(turns):
            await ws.send(json.dumps({"type": "INPUT", "prompt": "count to 50"}))
            await until_terminal(ws, stamp)
    return samples


def rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        total += child.memory_info().rss
    return total


async def idle_memory(url: str, pid: int, count: int) -> tuple[int, int, int]:
    await asyncio.sleep(0.5)
    before = rss(pid)
    sockets = []
    try:
        for start in range(0, count, 100):
            batch = await asyncio.gather(*(websockets.connect(url, ping_interval=None)
                                           for _ in range(min(100, count - start))))
            for ws in batch:
                await ws.send('{"type":"CONNECT"}')
            for ws in batch:
                while (await recv(ws))["type"] != "AGENT_PROFILE":
                    pass
            sockets.extend(batch)
        await asyncio.sleep(1.0)
        after = rss(pid)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return before, after, len(sockets)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--latency-turns", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ws-bench-") as folder:
        host = HostProcess(Path(folder)).start()
        try:
            await round_trips(host.ws_url, 2, 0.5)  # warm up
            done, errors, took = await round_trips(host.ws_url, args.connections, args.seconds)
            samples = await event_latency(host.ws_url, args.latency_turns)
            before, after, opened = await idle_memory(host.ws_url, host.proc.pid, args.idle)
        finally:
            host.stop()

    rows = [
        (f"turn round trips/s ({args.connections} connections, {args.seconds:g} s)",
         f"{done / took:.1f}  ({done} turns, {errors} errors)"),
        (f"event latency p50 ('count to 50', {len(samples)} events)", f"{statistics.median(samples):.2f} ms"),
        ("event latency p99", f"{pct(samples, 0.99):.2f} ms"),
        ("event latency max", f"{max(samples):.2f} ms"),
        (f"host RSS before / with {opened} idle sockets", f"{before / 2**20:.1f} MiB / {after / 2**20:.1f} MiB"),
        ("memory per idle WebSocket", f"{(after - before) / max(opened, 1) / 1024:.1f} KiB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    asyncio.run(main())
