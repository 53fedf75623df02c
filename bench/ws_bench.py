"""/ws figures against a real host process on loopback (demo agent, no API key):

* turn round trips per second with 8 connections each sending INPUT after INPUT;
* event latency (the event's ``ts``, stamped when the agent reaches that step, to client receipt), p50/p99,
  over the demo's 'count to 50' (≈200 events);
* memory per idle WebSocket: host RSS (process and children, psutil) with 1,000 idle handshaken sockets
  minus the RSS before, divided by 1,000;
* resume replay: one turn of 10,000 events (``bench.agents:flood_factory``), then fresh sockets ATTACH with
  ``last_msg_id="0"`` (the whole turn replayed from the log) and with a cursor 10 events before the end
  (tail): events per second and time from ATTACH to the replayed OUTPUT.

    .venv/bin/python bench/ws_bench.py [--seconds 5] [--connections 8] [--idle 1000] [--latency-turns 5]
                                       [--resume-events 10000] [--resume-only]

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

from tests.conftest import NO_TURN_LIMITS, HostProcess  # noqa: E402

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
            batch = await asyncio.gather(
                *(websockets.connect(url, ping_interval=None) for _ in range(min(100, count - start)))
            )
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


async def flood_turn(url: str, events: int) -> tuple[str, int, float]:
    """Run one ``flood N`` turn; returns the session id, its last event number and the turn's wall time."""
    async with websockets.connect(url, ping_interval=None, max_queue=None) as ws:
        started = time.monotonic()
        await ws.send(json.dumps({"type": "INPUT", "prompt": f"flood {events}"}))
        session_id, last = "", 0
        while True:
            frame = await recv(ws, timeout=120)
            if frame["type"] == "CONNECTED":
                session_id = frame["session_id"]
            elif "id" in frame:
                last = max(last, int(frame["id"]))
            if frame["type"] in ("OUTPUT", "ERROR"):
                assert frame["type"] == "OUTPUT", frame
                return session_id, last, time.monotonic() - started


async def attach_replay(url: str, session_id: str, cursor: int) -> tuple[int, float, float]:
    """ATTACH with ``last_msg_id=cursor`` on a fresh socket and read the replay up to its OUTPUT.

    Returns (events received, seconds from ATTACH to OUTPUT, seconds from ATTACH to the first event).
    Only the frame type is decoded: the client must not be the bottleneck.
    """
    async with websockets.connect(url, ping_interval=None, max_queue=None) as ws:
        started = time.monotonic()
        await ws.send(json.dumps({"type": "ATTACH", "session_id": session_id, "last_msg_id": str(cursor)}))
        received, first = 0, 0.0
        while True:
            raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
            head = raw[:40]
            if '"type":"CONNECTED"' in head or '"type": "CONNECTED"' in head or '"type":"PING"' in head:
                continue
            if received == 0:
                first = time.monotonic() - started
            received += 1
            if '"type":"OUTPUT"' in head or '"type": "OUTPUT"' in head or '"type":"ERROR"' in head:
                if json.loads(raw)["type"] != "OUTPUT":
                    raise RuntimeError(f"replay ended with {raw[:300]}")
                return received, time.monotonic() - started, first


async def resume_replay(url: str, events: int, *, full_runs: int = 5, tail_runs: int = 20) -> list[tuple[str, str]]:
    session_id, last, took = await flood_turn(url, events)
    rows = [(f"flood turn: {last} events written and streamed live", f"{took:.2f} s ({last / took:,.0f} events/s)")]
    fulls = [await attach_replay(url, session_id, 0) for _ in range(full_runs)]
    counts = {count for count, _, _ in fulls}
    walls = sorted(wall for _, wall, _ in fulls)
    median = walls[len(walls) // 2]
    count = fulls[0][0]
    rows += [
        (f"ATTACH last_msg_id=0: events replayed (x{full_runs})", f"{sorted(counts)}"),
        ("ATTACH last_msg_id=0: replay time median / best", f"{median * 1000:.0f} ms / {walls[0] * 1000:.0f} ms"),
        ("ATTACH last_msg_id=0: events/s median / best", f"{count / median:,.0f} / {count / walls[0]:,.0f}"),
        ("ATTACH last_msg_id=0: first event after", f"{statistics.median(f for _, _, f in fulls) * 1000:.1f} ms"),
    ]
    tails = [await attach_replay(url, session_id, last - 10) for _ in range(tail_runs)]
    tail_walls = [wall * 1000 for _, wall, _ in tails]
    rows += [
        (f"ATTACH last_msg_id={last - 10}: events replayed", f"{sorted({c for c, _, _ in tails})}"),
        (
            f"ATTACH tail replay time p50 / max (x{tail_runs})",
            f"{statistics.median(tail_walls):.1f} ms / {max(tail_walls):.1f} ms",
        ),
    ]
    return rows


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--latency-turns", type=int, default=5)
    parser.add_argument("--resume-events", type=int, default=10_000, help="0 skips the resume scenario")
    parser.add_argument("--resume-only", action="store_true")
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []
    if not args.resume_only:
        rows += await live_figures(args)
    if args.resume_events:
        with tempfile.TemporaryDirectory(prefix="ws-bench-resume-") as folder:
            host = HostProcess(Path(folder), "bench.agents:flood_factory").start()
            try:
                rows += await resume_replay(host.ws_url, args.resume_events)
            finally:
                host.stop()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


async def live_figures(args: argparse.Namespace) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as folder:
        # One loopback client drives turns back to back and 1,000 idle sockets: the limits would measure refusals.
        host = HostProcess(
            Path(folder), *NO_TURN_LIMITS, "--max-ws-per-ip", "0", "--max-connections-per-ip", "0"
        ).start()
        try:
            await round_trips(host.ws_url, 2, 0.5)  # warm up
            done, errors, took = await round_trips(host.ws_url, args.connections, args.seconds)
            samples = await event_latency(host.ws_url, args.latency_turns)
            before, after, opened = await idle_memory(host.ws_url, host.proc.pid, args.idle)
        finally:
            host.stop()

    return [
        (
            f"turn round trips/s ({args.connections} connections, {args.seconds:g} s)",
            f"{done / took:.1f}  ({done} turns, {errors} errors)",
        ),
        (f"event latency p50 ('count to 50', {len(samples)} events)", f"{statistics.median(samples):.2f} ms"),
        ("event latency p99", f"{pct(samples, 0.99):.2f} ms"),
        ("event latency max", f"{max(samples):.2f} ms"),
        (f"host RSS before / with {opened} idle sockets", f"{before / 2**20:.1f} MiB / {after / 2**20:.1f} MiB"),
        ("memory per idle WebSocket", f"{(after - before) / max(opened, 1) / 1024:.1f} KiB"),
    ]


if __name__ == "__main__":
    asyncio.run(main())
