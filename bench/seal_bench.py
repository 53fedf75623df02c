"""Sealed vs plain turn latency (PROTOCOL §4.8), direct and through our relay, on loopback.

    .venv/bin/python bench/seal_bench.py [--turns 200] [--upload-kb 0]

One real ``manage.py runhost bench.agents:instant_factory`` (a connectonion Agent whose LLM answers ``ok`` at
once) announcing on one real ``manage.py runrelay``. A *turn* is what a client pays per ``input()``: open a
socket, (SEAL → SEALED_OK), signed CONNECT → CONNECTED, signed INPUT → OUTPUT, close. Rows:

* ours plain / ours sealed: ``hosting.client`` with keys; "plain" skips the SEAL (what a keyed client did
  before sealing on loopback, and what any keyless client does).
* released sealed / released keyless: the released 1.9.2 client with keys (seals) and without (plain).

Paths alternate turn by turn (plain, sealed, plain, …) so a noisy neighbour hits both alike. Prints the median
and p90 of each row and the sealed/plain ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from connectonion import address as co_address  # noqa: E402
from connectonion import connect as released_connect  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from hosting.client import AsyncRemoteAgent  # noqa: E402
from tests.conftest import NO_TURN_LIMITS, HostProcess  # noqa: E402
from tests.support.hosts import RelayProcess  # noqa: E402
from trust.identity import AgentIdentity  # noqa: E402


class PlainAgent(AsyncRemoteAgent):
    """Our client with keys but no SEAL: the unsealed baseline (signed CONNECT and commands, bare socket)."""

    async def _offer_seal(self, ws):
        return None

    async def _open(self):
        import websockets

        from hosting.client import MAX_SIZE
        from hosting.relay import wire

        url = self._direct or wire.input_url(self.relay)
        ws = await websockets.connect(url, max_size=MAX_SIZE, open_timeout=10)
        self.transport = "direct" if self._direct else "relay"
        return ws, self._direct is not None


def ours(cls: type, address: str, relay: str, direct: str | None) -> AsyncRemoteAgent:
    agent = cls(address, relay_url=relay, keys=AgentIdentity.from_signing_key(SigningKey.generate()))
    agent._resolved = True  # the path under test, not the lookup
    agent._direct = direct
    return agent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(turns: int, upload_kb: int) -> None:
    files = None
    if upload_kb:
        data = base64.b64encode(b"x" * upload_kb * 1024).decode()
        files = [{"name": "bench.bin", "data": f"data:application/octet-stream;base64,{data}"}]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        relay = RelayProcess(cwd=folder).start()
        project = folder / "project"
        (project / ".co").mkdir(parents=True)
        (project / ".co" / "host.yaml").write_text("announce_loopback: true\n")
        host = HostProcess(
            project, "bench.agents:instant_factory", *NO_TURN_LIMITS, "--max-ws-per-ip", "0", "--relay-url", relay.base
        ).start(timeout=60)
        try:
            address = httpx.get(host.url + "/info").json()["address"]
            deadline = time.monotonic() + 30
            while httpx.get(f"{relay.http}/api/agents/{address}").status_code != 200:
                assert time.monotonic() < deadline, "host never listed on the relay"
                await asyncio.sleep(0.1)
            rows: dict[str, list[float]] = {}

            async def timed(name: str, call) -> None:
                started = time.perf_counter()
                await call()
                rows.setdefault(name, []).append((time.perf_counter() - started) * 1000)

            for path, direct in (("direct", host.ws_url), ("relayed", None)):
                plain = ours(PlainAgent, address, relay.base, direct)
                sealed = ours(AsyncRemoteAgent, address, relay.base, direct)
                for agent in (plain, sealed):  # warm up both paths (imports, first connections)
                    await agent.ainput("hi", files=files)
                for _ in range(turns):
                    for name, agent in ((f"ours plain {path}", plain), (f"ours sealed {path}", sealed)):
                        agent.reset()
                        await timed(name, lambda a=agent: a.ainput("hi", files=files))
                    assert sealed.sealed and sealed.transport == ("direct" if direct else "relay")

            # The released client: keys=generate() seals; keys=False is its plain path. It looks the agent
            # up on the relay itself: with keys it reaches our loopback endpoint directly; "relayed" rows
            # come from an agent object whose endpoint we cleared (its own fallback state).
            for path in ("direct", "relayed"):
                plain = released_connect(address, relay_url=relay.base, keys=False)
                sealed = released_connect(address, relay_url=relay.base, keys=co_address.generate())
                for agent in (plain, sealed):
                    await asyncio.to_thread(agent.input, "hi", timeout=30, files=files)
                    if path == "relayed":
                        agent._resolved_endpoint, agent._endpoint_resolved = None, True
                for _ in range(max(1, turns // 2)):
                    for name, agent in ((f"released keyless {path}", plain), (f"released sealed {path}", sealed)):
                        agent.reset()
                        if path == "relayed":
                            agent._resolved_endpoint, agent._endpoint_resolved = None, True
                        await timed(name, lambda a=agent: asyncio.to_thread(a.input, "hi", timeout=30, files=files))
        finally:
            host.stop()
            relay.stop()

    print(f"{'row':32} {'turns':>5} {'median ms':>10} {'p90 ms':>8}")
    for name, values in rows.items():
        print(f"{name:32} {len(values):5d} {statistics.median(values):10.2f} {pct(values, 0.9):8.2f}")
    print()
    for who, plain_name in (("ours", "plain"), ("released", "keyless")):
        for path in ("direct", "relayed"):
            p = statistics.median(rows[f"{who} {plain_name} {path}"])
            s = statistics.median(rows[f"{who} sealed {path}"])
            print(f"{who:8} {path:8} sealed/plain = {s / p:.2f}")
        d = statistics.median(rows[f"{who} sealed direct"])
        r = statistics.median(rows[f"{who} sealed relayed"])
        print(f"{who:8} sealed relayed/direct = {r / d:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--upload-kb", type=int, default=0, help="attach a file of this size to every turn")
    args = parser.parse_args()
    asyncio.run(run(args.turns, args.upload_kb))


if __name__ == "__main__":
    main()
