"""Issue 17.5: offline is quiet. With the relay unreachable the link logs one line (after the fifth
consecutive failure, PROTOCOL §8.1) and one when the relay is back; the backoff is capped; ``/health``
says ``"relay": "unreachable"`` while the host reports itself healthy and serves turns."""

from __future__ import annotations

import asyncio
import logging

import httpx

from tests.conftest import HostProcess
from tests.support.net import free_port

from .conftest import ScriptedRelay, wait_until


def _lines(caplog) -> list[str]:
    """What an operator sees of the link at the default level (INFO and up)."""
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("connectonion.relay") and r.levelno >= logging.INFO
    ]


async def test_an_unreachable_relay_is_one_line_and_its_return_another(link_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="connectonion.relay")
    port = free_port()
    link = await link_factory(f"ws://127.0.0.1:{port}", wait=False, backoff=(0.02, 0.04, 0.08), jitter=0.1)
    await wait_until(lambda: link.failures >= 12, timeout=20, what="a dozen failed attempts")
    assert link.state == "unreachable"
    lines = _lines(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"relay: ws://127.0.0.1:{port} unreachable (5 attempts; last: ")
    assert "the local HTTP and WebSocket service is unaffected" in lines[0]
    assert all(link._delay(n) <= 0.08 * 1.1 for n in range(1, 30))  # capped

    relay = await ScriptedRelay(reply_announce={"type": "ANNOUNCE_OK"}).start(port)  # the relay is back
    await wait_until(lambda: link.state == "connected", timeout=20, what="the link to be back")
    await link.stop()
    await relay.stop()
    lines = _lines(caplog)
    assert len(lines) == 2, lines
    assert lines[1].startswith(f"relay: ws://127.0.0.1:{port}/ws/announce reachable again after ")


async def test_a_blip_shorter_than_the_loud_threshold_logs_nothing(link_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="connectonion.relay")
    port = free_port()
    link = await link_factory(f"ws://127.0.0.1:{port}", wait=False, backoff=(0.3,), jitter=0.0)
    await wait_until(lambda: link.failures >= 1, timeout=10, what="one failed attempt")
    relay = await ScriptedRelay(reply_announce={"type": "ANNOUNCE_OK"}).start(port)
    await wait_until(lambda: link.state == "connected", timeout=10, what="the link")
    await link.stop()
    await relay.stop()
    assert _lines(caplog) == [f"relay: connected to ws://127.0.0.1:{port}/ws/announce"]


async def test_a_host_with_an_unreachable_relay_is_healthy_and_says_so(project):
    url = f"ws://127.0.0.1:{free_port()}"
    host = await asyncio.to_thread(HostProcess(project, "tests.agents:echo_factory", "--relay-url", url).start)
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def unreachable() -> dict | None:
                body = (await http.get(host.url + "/health")).json()
                return body if body.get("relay") == "unreachable" else None

            body = await wait_until(unreachable, timeout=30, what="/health to say unreachable")
            assert body["status"] == "healthy"
            reply = await http.post(host.url + "/input", json={"prompt": "hi"})
            assert reply.status_code == 200 and reply.json()["result"] == "echo: hi"
        log = host.output()
        assert "relay not connected" not in log and "retrying in" not in log  # no line per attempt
    finally:
        await asyncio.to_thread(host.stop)
