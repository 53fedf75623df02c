"""Steering a running turn through our relay, as on /ws: a real ``runrelay`` and a real ``runhost --relay-url``
with the demo agent, no direct endpoints. ``INTERRUPT`` ends the turn with ``OUTPUT`` status cancelled and the
conversation goes on (D29); the stored record reads ``cancelled``."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import HostProcess
from tests.hosting.relay.conftest import (
    client_socket,
    recv_json,
    relay_process,  # noqa: F401 - a fixture
    send_json,
)
from tests.support.hosts import wait_listed

pytestmark = [pytest.mark.slow]


@pytest.fixture
async def relayed(relay_process, tmp_path):  # noqa: F811
    relay = relay_process()
    project = tmp_path / "project"
    (project / ".co").mkdir(parents=True)
    (project / ".co" / "host.yaml").write_text("announce_loopback: false\n")
    host = await asyncio.to_thread(HostProcess(project, "--relay-url", relay.base).start)
    try:
        address = httpx.get(host.url + "/info", timeout=10).json()["address"]
        await asyncio.to_thread(wait_listed, relay.http, address)
        yield relay, host, address
    finally:
        await asyncio.to_thread(host.stop)


async def until(ws, *kinds: str, timeout: float = 20) -> list[dict]:
    """Frames up to the first of ``kinds`` (or an ERROR), PINGs answered."""
    frames = []
    while True:
        frame = await recv_json(ws, timeout, skip_ping=False)
        if frame.get("type") == "PING":
            await send_json(ws, {"type": "PONG"})
            continue
        frames.append(frame)
        if frame.get("type") in (*kinds, "ERROR"):
            return frames


async def test_interrupt_through_the_relay_ends_the_turn_with_output_and_the_conversation_goes_on(relayed):
    relay, host, address = relayed
    async with client_socket(relay, {"type": "CONNECT", "to": address}) as ws:
        sid = (await until(ws, "CONNECTED"))[-1]["session_id"]
        await send_json(ws, {"type": "INPUT", "prompt": "my name is Ada"})
        assert (await until(ws, "OUTPUT"))[-1]["result"] == "Nice to meet you, Ada!"
        await send_json(ws, {"type": "INPUT", "prompt": "count to 40 slowly"})
        await until(ws, "tool_result")
        await send_json(ws, {"type": "INTERRUPT"})
        end = (await until(ws, "OUTPUT"))[-1]
        assert end["type"] == "OUTPUT" and end["status"] == "cancelled" and end["result"] == "", end
        assert end["session_id"] == sid and end["session"]["turn"] == 2
        record = httpx.get(f"{host.url}/sessions/{sid}", timeout=10).json()
        assert record["status"] == "cancelled" and record["session"]["turn"] == 2, record
        await send_json(ws, {"type": "INPUT", "prompt": "what is my name"})
        after = (await until(ws, "OUTPUT"))[-1]
        assert after["result"] == "Your name is Ada." and after["session"]["turn"] == 3, after


async def test_runtime_input_through_the_relay_steers_the_running_turn_or_is_rejected(relayed):
    """Issue 17.7b on a relayed socket: the same Conversation decides, so the same frames come back."""
    relay, _host, address = relayed
    async with client_socket(relay, {"type": "CONNECT", "to": address}) as ws:
        sid = (await until(ws, "CONNECTED"))[-1]["session_id"]
        await send_json(ws, {"type": "INPUT", "prompt": "count slowly until I say stop"})
        await until(ws, "tool_result")
        await send_json(ws, {"type": "INPUT", "prompt": "stop, thanks", "input_id": "r1"})
        ack = (await until(ws, "RUNTIME_INPUT_ACK"))[-1]
        assert ack["type"] == "RUNTIME_INPUT_ACK" and ack["session_id"] == sid and ack["input_id"] == "r1", ack
        assert isinstance(ack["id"], str) and ack["id"]
        end = (await until(ws, "OUTPUT"))[-1]
        assert end["type"] == "OUTPUT" and end["result"].endswith("Stopped because you said 'stop, thanks'."), end
        await send_json(ws, {"type": "INPUT", "prompt": "quiz me"})
        question = (await until(ws, "ask_user"))[-1]
        await send_json(ws, {"type": "INPUT", "prompt": "stop"})
        refused = (await until(ws, "RUNTIME_INPUT_ACK"))[-1]
        assert refused["type"] == "ERROR" and refused["code"] == "RUNTIME_INPUT_REJECTED", refused
        assert refused["retryable"] is True and refused["session_id"] == sid
        await send_json(ws, {"type": "ASK_USER_RESPONSE", "answer": "Paris", "request_id": question["id"]})
        after = (await until(ws, "OUTPUT"))[-1]
        assert after["type"] == "OUTPUT" and after["result"] == "Correct!" and after["session"]["turn"] == 2, after
