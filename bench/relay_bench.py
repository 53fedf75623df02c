"""Relay figures on loopback: relayed vs direct round trip (echo conversation) and how many concurrent
relayed sessions one relay process holds.

    .venv/bin/python bench/relay_bench.py [--rounds 500] [--sessions 200,1000,2000] [--concurrent 200]

The relay is a real ``manage.py runrelay`` (daphne) process. The agent side (``RelayLink`` with
``EchoConversation``), the direct echo server (plain ``websockets``) and the clients run in this
process. Every loop is bounded; the script prints figures and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402
import websockets  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402
from websockets.asyncio.server import serve  # noqa: E402

from hosting.relay.echo import EchoConversation  # noqa: E402
from hosting.relay.link import RelayLink  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from trust.identity import AgentIdentity  # noqa: E402


def start_relay(port: int, folder: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNECTONION_", "RELAY_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(
        PYTHONPATH=str(REPO),
        RELAY_LOG_LEVEL="WARNING",
        CONNECTONION_HOST_ARGS=json.dumps({"project_dir": str(folder), "relay_url": None}),
    )
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "runrelay", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("relay did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def round_trips(url: str, first: dict, rounds: int) -> list[float]:
    """INPUT → OUTPUT latencies (ms) on one socket after a handshake."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps(first))
        json.loads(await ws.recv())
        times = []
        for n in range(rounds):
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "INPUT", "prompt": f"p{n}"}))
            while json.loads(await ws.recv()).get("type") != "OUTPUT":
                pass
            times.append((time.perf_counter() - started) * 1000)
        return times


async def direct_server() -> tuple[object, int]:
    async def handler(ws):
        async def send(frame):
            await ws.send(json.dumps(frame))

        conversation = EchoConversation(send, transport="direct")
        async for raw in ws:
            await conversation.handle(json.loads(raw))

    server = await serve(handler, "127.0.0.1", 0, max_size=None)
    return server, server.sockets[0].getsockname()[1]


async def concurrent_sessions(relay: str, address: str, count: int, relay_proc: psutil.Process) -> dict:
    """Open ``count`` relayed sessions, then one INPUT on each at once; report time and relay RSS."""
    rss_before = relay_proc.memory_info().rss
    sockets = []
    opened = time.perf_counter()
    try:
        for batch in range(0, count, 100):
            group = await asyncio.gather(
                *(websockets.connect(relay + "/ws/input") for _ in range(min(100, count - batch)))
            )
            sockets.extend(group)
            await asyncio.gather(*(ws.send(json.dumps({"type": "CONNECT", "to": address})) for ws in group))
            await asyncio.gather(*(ws.recv() for ws in group))
        open_s = time.perf_counter() - opened
        rss_open = relay_proc.memory_info().rss
        latencies: list[float] = []
        errors: list[str] = []

        async def one(ws, n):
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "INPUT", "prompt": f"s{n}"}))
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") == "OUTPUT":
                    latencies.append((time.perf_counter() - started) * 1000)
                    return
                if frame.get("type") == "ERROR":
                    errors.append(frame.get("message", ""))
                    return

        cpu_before = sum(relay_proc.cpu_times()[:2])
        own_before = sum(psutil.Process().cpu_times()[:2])
        burst = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one(ws, n) for n, ws in enumerate(sockets))), 120)
        burst_s = time.perf_counter() - burst
        relay_cpu = sum(relay_proc.cpu_times()[:2]) - cpu_before
        own_cpu = sum(psutil.Process().cpu_times()[:2]) - own_before
        return {
            "sessions": count,
            "open_s": open_s,
            "burst_s": burst_s,
            "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 0.99),
            "relay_rss_per_session_kib": (rss_open - rss_before) / count / 1024,
            "errors": len(errors),
            "relay_cpu_s": relay_cpu,
            "bench_cpu_s": own_cpu,
        }
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    port = free_port()
    relay_proc = start_relay(port, folder)
    relay = f"ws://127.0.0.1:{port}"
    identity = AgentIdentity.from_signing_key(SigningKey.generate())
    link = RelayLink(
        identity,
        relay_url=relay,
        conversation_factory=EchoConversation,
        max_conversations=max(args.sessions) + 100,
        idle_timeout=600,
    )
    server = None
    try:
        await link.start()
        while link.state != "connected":
            await asyncio.sleep(0.02)
        server, direct_port = await direct_server()
        first = {"type": "CONNECT", "to": identity.address}
        await round_trips(f"ws://127.0.0.1:{direct_port}", first, 50)  # warm-up
        await round_trips(relay + "/ws/input", first, 50)
        direct = await round_trips(f"ws://127.0.0.1:{direct_port}", first, args.rounds)
        relayed = await round_trips(relay + "/ws/input", first, args.rounds)
        print(f"round trip, {args.rounds} sequential INPUT→OUTPUT on one socket (ms):")
        for name, values in (("direct", direct), ("relayed", relayed)):
            print(f"  {name:8s} p50 {statistics.median(values):6.2f}  p99 {percentile(values, 0.99):6.2f}")
        print(f"  relay overhead p50 {statistics.median(relayed) - statistics.median(direct):.2f} ms")

        proc = psutil.Process(relay_proc.pid)
        print(f"\nconcurrent relayed sessions (one INPUT each, all at once; {os.cpu_count()} cores):")
        for count in args.sessions:
            try:
                figures = await concurrent_sessions(relay, identity.address, count, proc)
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                print(f"  {count:5d} sessions: FAILED ({exc.__class__.__name__}: {exc})")
                break
            print(
                f"  {count:5d} sessions: opened in {figures['open_s']:.2f} s, burst done in "
                f"{figures['burst_s']:.2f} s, p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                f"relay RSS +{figures['relay_rss_per_session_kib']:.1f} KiB/session, {figures['errors']} errors; "
                f"CPU in the burst: relay {figures['relay_cpu_s']:.2f} s, agent+clients {figures['bench_cpu_s']:.2f} s"
            )
            await asyncio.sleep(0.5)
    finally:
        if server is not None:
            server.close()
        await link.stop()
        os.killpg(relay_proc.pid, signal.SIGTERM)
        relay_proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--sessions", default="200,1000,2000,4000")
    parsed = parser.parse_args()
    parsed.sessions = [int(n) for n in parsed.sessions.split(",")]
    asyncio.run(main(parsed))
