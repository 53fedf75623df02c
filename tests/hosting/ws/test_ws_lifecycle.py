"""/ws keep-alive, answer timeout and restart, each on a host configured for it through ``.co/host.yaml``."""

from __future__ import annotations

import time

import pytest
import websockets

from tests.support.ws import WS

from .test_ws_turns import turn, wait_record


@pytest.fixture(scope="module")
def keepalive_host(module_hosts):
    return module_hosts(yaml="ws_ping_interval: 0.5\nws_pong_timeout: 2\n", name="keepalive")


@pytest.fixture(scope="module")
def impatient_host(module_hosts):
    return module_hosts(yaml="answer_timeout: 1\n", name="impatient")


async def test_pings_keep_coming_while_the_client_answers(keepalive_host):
    async with await WS.open(keepalive_host.ws_url) as ws:
        await ws.send({"type": "CONNECT"})
        await ws.until("AGENT_PROFILE")
        assert await ws.nothing_for(3) == []  # beyond the pong timeout: still open because we PONG
        assert ws.pings >= 3
        frames = await turn(ws, "calculate 3*3")
        assert frames[-1]["type"] == "OUTPUT"


async def test_a_silent_client_is_closed_and_its_turn_continues(keepalive_host):
    ws = await WS.open(keepalive_host.ws_url, pong=False)
    await ws.send({"type": "INPUT", "prompt": "count to 8 slowly"})
    sid = (await ws.recv())["session_id"]
    closed_at = None
    deadline = time.monotonic() + 10
    while closed_at is None and time.monotonic() < deadline:
        try:
            await ws.recv(timeout=deadline - time.monotonic())
        except websockets.ConnectionClosed:
            closed_at = time.monotonic()
    assert closed_at is not None and ws.pings >= 2
    record = await wait_record(keepalive_host, sid, lambda r: r["status"] != "running")
    assert record["status"] == "done" and record["result"].endswith("8")


async def test_an_unanswered_question_ends_the_turn_with_a_clear_error(impatient_host):
    async with await WS.open(impatient_host.ws_url) as ws:
        frames = await turn(ws, "quiz me")
        sid = frames[0]["session_id"]
        assert any(f["type"] == "ask_user" for f in frames)
        error = frames[-1]
        assert error["type"] == "ERROR" and "no answer within 1 s" in error["message"], error
    record = await wait_record(impatient_host, sid, lambda r: r["status"] != "running")
    assert record["status"] == "failed"


async def test_a_completed_session_can_be_attached_after_a_restart(start_host, project):
    host = start_host()
    async with await WS.open(host.ws_url) as ws:
        output = (await turn(ws, "calculate 5*5"))[-1]
    host.stop()
    again = start_host(port=host.port)
    async with await WS.open(again.ws_url) as ws:
        await ws.send({"type": "ATTACH", "session_id": output["session_id"]})
        connected = await ws.recv()
        assert connected["status"] == "completed" and connected["result"] == output["result"]
