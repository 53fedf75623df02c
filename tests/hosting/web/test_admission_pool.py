"""POST /input's admission (the gate's signature check) runs on the bookkeeping pool, not the agents' one: with
every agent thread held by a running turn, a bad signature is still refused at once (issue 16: one way to a
thread, and agent turns cannot starve the bookkeeping). Before, it queued behind the running agent."""

from __future__ import annotations

import asyncio

import httpx
from nacl.signing import SigningKey

from tests.e2e.trust.conftest import host_address
from tests.support.envelopes import signed
from tests.support.hosts import HostProcess
from tests.support.wait import wait_until

DEADLINE = 20  # seconds: the refusal must come while the gated turn still runs (it holds up to 60 s)


async def test_a_bad_signature_is_refused_while_every_agent_thread_is_busy(project, tmp_path):
    host = await asyncio.to_thread(HostProcess(project, "tests.agents:gated_factory", "--pool-size", "1").start)
    gate = tmp_path / "open"
    try:
        async with httpx.AsyncClient(base_url=host.url, timeout=90) as http:
            held = asyncio.create_task(http.post("/input", json={"prompt": f"wait {gate}"}))

            async def running() -> bool:
                return any(s["status"] == "running" for s in (await http.get("/sessions")).json()["sessions"])

            await wait_until(running, DEADLINE, "the gated turn to run")  # the pool's one agent thread is taken
            body = signed(SigningKey.generate(), await asyncio.to_thread(host_address, host), prompt="hi")
            body["payload"]["prompt"] = "changed"
            refused = await asyncio.wait_for(http.post("/input", json=body), DEADLINE)
            assert (refused.status_code, refused.json()) == (401, {"error": "unauthorized: invalid signature"})
            assert not held.done()
            gate.touch()
            done = await asyncio.wait_for(held, DEADLINE)
            assert (done.status_code, done.json()["result"]) == (200, "opened")
    finally:
        gate.touch()
        await asyncio.to_thread(host.stop)
