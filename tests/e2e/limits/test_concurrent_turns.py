"""Concurrent turns per identity and per client address (429 + Retry-After over a cap; slots free when turns end)."""

from __future__ import annotations

import httpx
import pytest
from nacl.signing import SigningKey

from tests.e2e.limits.conftest import OTHER_IP, agent_address, assert_rate_limited
from tests.support.envelopes import signed
from tests.support.ws import WS

SLOW = "tests.agents:slow_factory"


@pytest.fixture
def host(start_host):
    return start_host(
        SLOW,
        "--trust",
        "open",
        "--max-turns-per-identity",
        "2",
        "--max-turns-per-ip",
        "3",
        "--rate-limit-per-minute",
        "0",
    )


async def _running(url: str, prompt: str, *, connect: dict | None = None) -> WS:
    """A socket whose INPUT started a slow turn (its ``user_input`` event has arrived); ``connect``: a signed
    CONNECT sent first."""
    ws = await WS.open(url)
    if connect is not None:
        await ws.send({"type": "CONNECT", **connect})
        assert (await ws.until(("CONNECTED", "ERROR")))[-1]["type"] == "CONNECTED"
    await ws.send({"type": "INPUT", "prompt": prompt})
    frames = await ws.until(("user_input", "ERROR"))
    assert frames[-1]["type"] == "user_input", frames
    return ws


async def test_turns_are_capped_per_identity_and_per_address_and_freed_when_they_end(host):
    to = agent_address(host)
    mallory, trent, other = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    sockets = [await _running(host.ws_url, "sleep 4") for _ in range(2)]
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            # The anonymous identity of 127.0.0.1 holds 2 turns: its cap.
            assert_rate_limited(await client.post(host.url + "/input", json={"prompt": "sleep 0"}), max_retry_after=5)
            # A signed identity on the same address may run one more: the address then holds its 3.
            sockets.append(await _running(host.ws_url, "sleep 4", connect=signed(mallory, to)))
            r = await client.post(host.url + "/input", json=signed(trent, to, prompt="sleep 0"))
            assert_rate_limited(r, max_retry_after=5)
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=OTHER_IP), timeout=30) as far:
            r = await far.post(host.url + "/input", json=signed(other, to, prompt="sleep 0"))
            assert r.status_code == 200, r.text  # another address is served meanwhile
            # ...and refusals on 127.0.0.1 took nothing from it: its anonymous identity has both slots.
            assert (await far.post(host.url + "/input", json={"prompt": "sleep 0"})).status_code == 200
        for ws in sockets:
            assert (await ws.until(("OUTPUT", "ERROR"), timeout=30))[-1]["type"] == "OUTPUT"
        async with httpx.AsyncClient(timeout=30) as client:  # the turns ended: the slots are free again
            assert (await client.post(host.url + "/input", json={"prompt": "sleep 0"})).status_code == 200
    finally:
        for ws in sockets:
            await ws.close()


async def test_a_refused_ws_input_names_the_problem_and_keeps_the_socket(host):
    sockets = [await _running(host.ws_url, "sleep 3") for _ in range(2)]
    try:
        async with await WS.open(host.ws_url) as third:
            await third.send({"type": "INPUT", "prompt": "sleep 0"})
            frames = await third.until(("OUTPUT", "ERROR"))
            error = frames[-1]
            assert (error["type"], error["message"], error["retryable"]) == ("ERROR", "too many requests", True)
            assert isinstance(error["retry_after"], int) and 1 <= error["retry_after"] <= 5
            for ws in sockets:
                await ws.until("OUTPUT", timeout=30)
            await third.send({"type": "INPUT", "prompt": "sleep 0"})  # same socket, once a slot is free
            assert (await third.until(("OUTPUT", "ERROR")))[-1]["type"] == "OUTPUT"
    finally:
        for ws in sockets:
            await ws.close()
