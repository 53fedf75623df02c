"""The replay log on Redis Streams (issue 18): a WS client resumes on another machine, exactly once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.ws import WS

pytestmark = pytest.mark.slow


async def _start_and_drop(url: str, prompt: str, seen: int) -> tuple[str, list[dict]]:
    async with await WS.open(url) as ws:
        await ws.send({"type": "INPUT", "prompt": prompt})
        connected = await ws.recv()
        got = [await ws.recv() for _ in range(seen)]
    return connected["session_id"], got


def test_resume_on_another_machine_gets_every_missed_event_once_then_output(shared_machines):
    one, two = shared_machines.start(2)
    assert httpx.get(two.url + "/health").json()["replay_log"] == "redis"

    async def scenario() -> None:
        sid, before = await _start_and_drop(one.ws_url, "count to 8 slowly", seen=4)
        assert all("id" in f for f in before), before
        await asyncio.sleep(0.8)  # events happen while nobody is connected
        async with await WS.open(two.ws_url) as ws:
            await ws.send({"type": "ATTACH", "session_id": sid, "last_msg_id": before[-1]["id"]})
            connected = await ws.recv()
            assert connected["type"] == "CONNECTED" and connected["status"] == "running", connected
            after = [f for f in await ws.until("OUTPUT", timeout=30) if f["type"] != "AGENT_PROFILE"]
        ids = [int(f["id"]) for f in before + after]
        assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # no gap, no duplicate, original ids
        assert after[-1]["result"] == "1, 2, 3, 4, 5, 6, 7, 8"
        # the next turn, on the other machine, numbers its events after this one's
        async with await WS.open(two.ws_url) as ws:
            await ws.send({"type": "CONNECT", "session_id": sid})
            await ws.until("AGENT_PROFILE")
            await ws.send({"type": "INPUT", "prompt": "calculate 2*3"})
            frames = await ws.until(("OUTPUT", "ERROR"), timeout=30)
        numbered = [int(f["id"]) for f in frames if "id" in f and str(f["id"]).isdigit()]
        assert numbered and min(numbered) > ids[-1], (ids[-1], numbered)
        # and a resume from the start of the session on the first machine replays the last turn whole
        async with await WS.open(one.ws_url) as ws:
            await ws.send({"type": "ATTACH", "session_id": sid, "last_msg_id": str(ids[-1])})
            connected = await ws.recv()
            assert connected["status"] == "completed", connected

    asyncio.run(scenario())
