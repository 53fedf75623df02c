"""A real host behind a scripted relay: the relay door holds what HTTP and /ws hold.

- Issue 15.7: a relayed frame nested 100,000 deep is refused by the host's decoder; the relay link stays up
  and the other relayed conversations go on.
- Issue 16 (drift): a legacy untagged relay ``INPUT`` (D12) takes the rate limit and the turn holds of
  ``hosting/core/throttle.py``, with the texts HTTP and /ws answer.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import HostProcess

from .conftest import wait_until
from .test_relay_decoder import NESTING, deep

RATE = "too many requests"


@pytest.fixture
async def hosted(scripted_relay, project):
    """A slow-agent host (1 running turn per identity, a burst of 3 turns) announcing on a scripted relay."""
    relay = await scripted_relay(reply_announce={"type": "ANNOUNCE_OK"})
    args = (
        "tests.agents:slow_factory",
        "--relay-url",
        relay.base,
        "--rate-limit-per-minute",
        "1",
        "--rate-limit-burst",
        "3",
        "--max-turns-per-identity",
        "1",
    )
    host = await asyncio.to_thread(HostProcess(project, *args).start)
    await wait_until(lambda: relay.announces, timeout=30, what="the host's ANNOUNCE")
    yield relay, host
    await asyncio.to_thread(host.stop)


async def _running(host) -> bool:
    async with httpx.AsyncClient() as http:  # the operator on loopback lists anonymous sessions (D21)
        sessions = (await http.get(host.url + "/sessions")).json()["sessions"]
    return any(s["status"] == "running" for s in sessions)


def _outputs(relay, **match):
    return [f for f in relay.frames("OUTPUT") if all(f.get(k) == v for k, v in match.items())]


async def test_legacy_relay_input_takes_the_rate_limit_and_the_turn_holds(hosted):
    relay, host = hosted
    ws = relay.sockets[-1]
    await ws.send(json.dumps({"type": "INPUT", "input_id": "a", "prompt": "sleep 2"}))
    await wait_until(lambda: _running(host), timeout=30, what="a to be running")  # it holds the one slot
    await ws.send(json.dumps({"type": "INPUT", "input_id": "b", "prompt": "sleep 0"}))
    busy = await wait_until(lambda: _outputs(relay, input_id="b"), timeout=30, what="b's answer")
    assert busy == [{"type": "OUTPUT", "input_id": "b", "result": RATE, "success": False}]  # the hold

    done = await wait_until(lambda: _outputs(relay, input_id="a"), timeout=30, what="a's answer")
    assert done[0]["success"] is True and done[0]["result"] == "slept 2.0"
    await ws.send(json.dumps({"type": "INPUT", "input_id": "c", "prompt": "sleep 0"}))  # the burst's third
    assert (await wait_until(lambda: _outputs(relay, input_id="c"), timeout=30, what="c"))[0]["success"]
    await ws.send(json.dumps({"type": "INPUT", "input_id": "d", "prompt": "sleep 0"}))  # the bucket is empty
    limited = await wait_until(lambda: _outputs(relay, input_id="d"), timeout=30, what="d's answer")
    assert limited == [{"type": "OUTPUT", "input_id": "d", "result": RATE, "success": False}]


async def test_a_relayed_frame_nested_100000_deep_leaves_the_link_and_other_conversations(hosted):
    relay, host = hosted
    ws = relay.sockets[-1]
    await ws.send(deep(conn_id="bad", session_id="bad", type="INPUT"))
    await ws.send(deep(65, conn_id="deep65", session_id="deep65", type="INPUT"))
    await ws.send(json.dumps({"type": "INPUT", "conn_id": "good", "session_id": "good", "prompt": "sleep 0"}))
    out = await wait_until(lambda: _outputs(relay, conn_id="good"), timeout=30, what="the good conversation")
    assert out[0]["result"] == "slept 0.0"
    errors = [f for f in relay.frames("ERROR") if f.get("conn_id") == "deep65"]
    assert errors and errors[0]["message"] == NESTING
    assert len(relay.connections) == 1  # the link never dropped
    assert "RecursionError" not in host.output()
