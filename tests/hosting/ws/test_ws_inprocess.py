"""The /ws flow in-process with Channels' ``WebsocketCommunicator`` against the real ASGI application."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from connectonion_site.asgi import application
from tests.support.ws import frames_until

pytestmark = pytest.mark.django_db(transaction=True)


async def test_an_empty_seal_is_refused_and_the_socket_closed():
    comm = WebsocketCommunicator(application, "/ws")
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"type": "SEAL"})
    assert (await frames_until(comm, "ERROR"))[0]["message"] == "seal refused: SEAL is missing to"
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4003}


async def test_connect_then_a_tool_turn():
    comm = WebsocketCommunicator(application, "/ws")
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"type": "CONNECT"})
    hello = await frames_until(comm, "AGENT_PROFILE")
    assert [f["type"] for f in hello] == ["CONNECTED", "AGENT_PROFILE"] and hello[0]["status"] == "new"
    await comm.send_json_to({"type": "INPUT", "prompt": "translate hello to spanish", "input_id": "a"})
    frames = await frames_until(comm, ("OUTPUT", "ERROR"))
    kinds = [f["type"] for f in frames]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("OUTPUT")
    assert frames[-1]["input_id"] == "a" and "hola" in frames[-1]["result"]
    await comm.disconnect()


async def test_other_paths_close_with_4004():
    comm = WebsocketCommunicator(application, "/elsewhere")
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4004}


async def test_errors_leave_the_socket_usable():
    comm = WebsocketCommunicator(application, "/ws")
    await comm.connect()
    await comm.send_to(text_data="[1,")
    error = json.loads(await comm.receive_from())
    assert error["message"].startswith("Invalid JSON") and error["received"] == "[1,"
    await comm.send_to(bytes_data=b"\x01")
    assert json.loads(await comm.receive_from())["type"] == "ERROR"
    await comm.send_json_to({"type": "NOPE"})
    assert json.loads(await comm.receive_from())["message"] == "authenticate first (send CONNECT)"
    await comm.send_json_to({"type": "INIT"})
    assert json.loads(await comm.receive_from())["status"] == "new"
    await comm.send_json_to({"type": "NOPE"})
    assert json.loads(await comm.receive_from())["message"] == "unknown message type: 'NOPE'"
    await comm.disconnect()


async def test_a_socket_that_leaves_at_once_leaves_no_viewer_in_the_hub():
    from hosting.core.runtime import get_runtime

    runtime = get_runtime()
    sids = []
    for _ in range(5):
        comm = WebsocketCommunicator(application, "/ws")
        await comm.connect()
        await comm.send_json_to({"type": "CONNECT"})
        sids.append((await frames_until(comm, "AGENT_PROFILE"))[0]["session_id"])
        await comm.send_json_to({"type": "INPUT", "prompt": "calculate 1+2"})
        await comm.disconnect()
    deadline = asyncio.get_running_loop().time() + 10
    while any(runtime.hub.viewers(s) or s in runtime.turns.active for s in sids):
        assert asyncio.get_running_loop().time() < deadline, [runtime.hub.viewers(s) for s in sids]
        await asyncio.sleep(0.05)


async def test_attach_replays_a_turn_longer_than_a_page_exactly_once(monkeypatch):
    """Resume reads the log in pages (``REPLAY_PAGE``); each event crosses a page boundary once, in order."""
    monkeypatch.setattr("hosting.conversation.viewers.REPLAY_PAGE", 7)
    comm = WebsocketCommunicator(application, "/ws")
    await comm.connect()
    await comm.send_json_to({"type": "INPUT", "prompt": "count to 6"})
    live = [f for f in await frames_until(comm, ("OUTPUT", "ERROR")) if "id" in f]
    await comm.disconnect()
    assert len(live) > 3 * 7
    for cursor in (0, int(live[9]["id"])):
        comm = WebsocketCommunicator(application, "/ws")
        await comm.connect()
        await comm.send_json_to({"type": "ATTACH", "session_id": live[-1]["session_id"], "last_msg_id": str(cursor)})
        replayed = [f for f in await frames_until(comm, ("OUTPUT", "ERROR")) if f["type"] != "CONNECTED"]
        await comm.disconnect()
        assert replayed == [f for f in live if int(f["id"]) > cursor]
