"""HARDENING W14 (WebSocket connections per address) and the turn rate on WS INPUT."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.e2e.limits.conftest import OTHER_IP
from tests.support.ws import WS

ECHO = "tests.agents:echo_factory"
CAP = 6


async def _open(url: str, local: str = "127.0.0.1") -> WS:
    return WS(await websockets.connect(url, ping_interval=None, local_addr=(local, 0), open_timeout=10))


async def _serves(ws: WS) -> bool:
    """The socket answers a frame (SESSION_STATUS needs no handshake)."""
    await ws.send({"type": "SESSION_STATUS", "session_id": "x"})
    return (await ws.recv())["type"] == "SESSION_STATUS"


async def _refused_code(url: str) -> int:
    """Open one more socket from 127.0.0.1 and return the close code it gets at once."""
    ws = await _open(url)
    try:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv(timeout=10)
        return info.value.rcvd.code
    finally:
        await ws.close()


@pytest.fixture
def host(start_host):
    return start_host(ECHO, "--max-ws-per-ip", str(CAP), "--rate-limit-per-minute", "60", "--rate-limit-burst", "2")


async def test_w14_sockets_over_the_per_address_cap_are_refused_with_4429_others_served(host):
    held = [await _open(host.ws_url) for _ in range(CAP)]
    try:
        assert all([await _serves(ws) for ws in held])
        codes = await asyncio.gather(*(_refused_code(host.ws_url) for _ in range(4)))
        # 4000 + 429, like the host's 4003 / 4004 / 4408: refused by the cap (a socket left to time out would
        # end with another code); how fast is bench's business, not a test's
        assert codes == [4429] * 4
        assert all([await _serves(ws) for ws in held])  # the sockets already open are untouched
        async with await _open(host.ws_url, OTHER_IP) as other:
            assert await _serves(other)  # another address is served
        for ws in held[:2]:
            await ws.close()
        deadline = time.monotonic() + 15
        while True:  # the server frees a slot once it has seen the close
            ws = await _open(host.ws_url)
            try:
                if await _serves(ws):
                    held.append(ws)
                    break
            except ConnectionClosed:
                await ws.close()
            assert time.monotonic() < deadline, "closing sockets never freed their slots"
            await asyncio.sleep(0.05)
    finally:
        for ws in held:
            await ws.close()


async def test_ws_input_over_the_rate_gets_an_error_and_the_socket_stays_open(host):
    async with await WS.open(host.ws_url) as ws:
        for prompt in ("one", "two"):  # the burst
            await ws.send({"type": "INPUT", "prompt": prompt})
            assert (await ws.until(("OUTPUT", "ERROR")))[-1]["type"] == "OUTPUT"
        await ws.send({"type": "INPUT", "prompt": "three"})
        error = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert (error["type"], error["message"], error["retryable"]) == ("ERROR", "too many requests", True)
        assert error["retry_after"] == 1  # one token a second at 60/min
        assert error["session_id"]
        await asyncio.sleep(error["retry_after"])
        await ws.send({"type": "INPUT", "prompt": "four"})
        output = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert output["type"] == "OUTPUT" and output["result"] == "echo: four"
