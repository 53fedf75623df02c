"""/ws end to end against a real host process: handshakes, streamed turns, human in the loop, bad frames.

PROTOCOL §4; checklist items 48-75, 79a. One host serves the module (``max_request_mb: 0.01`` so the
oversize check is cheap to reach); every test opens its own sockets and sessions.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
import websockets

from tests.conftest import NO_TURN_LIMITS
from tests.support.ws import WS, events_only

SEAL = {
    "type": "SEAL",
    "to": "0x" + "ab" * 32,
    "from": "0x" + "cd" * 32,
    "ephemeral": "ef" * 32,
    "timestamp": int(time.time()),
    "signature": "00" * 64,
}


@pytest.fixture(scope="module")
def host(module_hosts):
    return module_hosts(*NO_TURN_LIMITS, yaml="max_request_mb: 0.01\n", name="wsturns")  # 4 sockets x 15 turns


async def turn(ws: WS, prompt: str, **extra) -> list[dict]:
    await ws.send({"type": "INPUT", "prompt": prompt, **extra})
    return await ws.until(("OUTPUT", "ERROR"))


# -- opening sequences ---------------------------------------------------------------------------------------


async def test_a_seal_that_does_not_verify_gets_one_error_then_close_4003(host):
    """HARDENING W6 as amended by D19: the host seals (tests/hosting/conversation); a SEAL it cannot accept is answered at once
    with one ``seal refused:`` ERROR (never silence), then the socket closes."""
    async with await WS.open(host.ws_url) as ws:
        await ws.send(SEAL)
        error = await ws.recv(timeout=5)
        assert error == {"type": "ERROR", "message": "seal refused: SEAL is addressed to another host"}
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv(timeout=5)
        assert ws.sock.close_code == 4003


async def test_other_path_is_closed_with_4004(host):
    sock = await websockets.connect(host.ws_url.replace("/ws", "/other"))
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(sock.recv(), 5)
    assert sock.close_code == 4004


async def test_bare_input_is_an_implicit_anonymous_handshake(host):
    async with await WS.open(host.ws_url) as ws:
        frames = await turn(ws, "calculate (2+3)*7")
        assert frames[0]["type"] == "CONNECTED" and frames[0]["status"] == "new"
        output = frames[-1]
        assert output["type"] == "OUTPUT" and "35" in output["result"]
        assert output["session_id"] == frames[0]["session_id"] == output["session"]["session_id"]
        assert {"tool_call", "tool_result"} <= {f["type"] for f in events_only(frames)}


async def test_init_opens_a_new_session_and_input_then_runs(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INIT"})
        connected = await ws.recv()
        assert connected["type"] == "CONNECTED" and connected["status"] == "new"
        uuid.UUID(connected["session_id"])
        frames = await turn(ws, "what time is it")
        assert frames[-1]["type"] == "OUTPUT" and frames[-1]["session"]["session_id"] == connected["session_id"]


async def test_connect_answers_with_protocol_and_agent_profile(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "CONNECT"})
        connected, profile = await ws.recv(), await ws.recv()
        assert connected["status"] == "new" and connected["protocol"]["name"] == "oip"
        assert connected["protocol"]["version"] == "0.1"
        assert profile["type"] == "AGENT_PROFILE" and profile["session_id"] == connected["session_id"]
        assert "calculate" in profile["tools"] and profile["address"].startswith("0x")


# -- streaming ------------------------------------------------------------------------------------------------


async def test_tool_turn_streams_an_ordered_enveloped_event_sequence(host):
    async with await WS.open(host.ws_url) as ws:
        frames = await turn(ws, "calculate 6*7")
        sid = frames[0]["session_id"]
        events = events_only(frames)
        kinds = [e["type"] for e in events]
        assert kinds.index("thinking") < kinds.index("llm_call") < kinds.index("tool_call") < kinds.index("tool_result")
        call = next(e for e in events if e["type"] == "tool_call")
        result = next(e for e in events if e["type"] == "tool_result")
        assert call["tool_id"] == result["tool_id"] and result["name"] == "calculate" and result["result"] == "42"
        assert "timing_ms" in result and result["status"] == "completed"
        for event in [*events, frames[-1]]:
            assert isinstance(event["id"], str), event
            assert event["session_id"] == sid
        for event in events:
            assert isinstance(event["ts"], float)
        ids = [int(e["id"]) for e in [*events, frames[-1]]]
        assert ids == sorted(set(ids)), ids


async def test_input_id_is_echoed_and_output_session_continues_the_conversation(host):
    async with await WS.open(host.ws_url) as ws:
        first = (await turn(ws, "my name is Ada", input_id="in-1"))[-1]
        assert first["input_id"] == "in-1"
    async with await WS.open(host.ws_url) as ws:
        second = (await turn(ws, "what is my name", session=first["session"]))[-1]
        assert "Ada" in second["result"] and second["session"]["session_id"] == first["session_id"]
        assert second["session"]["turn"] == 2


# -- human in the loop ----------------------------------------------------------------------------------------


async def test_ask_user_round_trip(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "quiz me"})
        ask = (await ws.until("ask_user"))[-1]
        assert ask["question"] and ask["options"]
        await ws.send({"type": "ASK_USER_RESPONSE", "answer": "Paris", "request_id": ask["id"]})
        output = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert output["type"] == "OUTPUT" and output["result"] == "Correct!"


@pytest.mark.parametrize(
    "answer, saved",
    [
        ({"approved": True, "scope": "once"}, True),
        ({"approved": False, "scope": "once"}, False),
        ({"approved": "yes", "scope": "once"}, False),
        ({"approved": True, "scope": "session"}, True),
    ],
)
async def test_approval_round_trips(host, answer, saved):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "save a note: milk"})
        ask = (await ws.until("approval_needed"))[-1]
        assert ask["tool"] == "save_note" and ask["arguments"] == {"text": "milk"}
        await ws.send({"type": "APPROVAL_RESPONSE", "request_id": ask["id"], **answer})
        frames = await ws.until(("OUTPUT", "ERROR"))
        result = next(f for f in frames if f["type"] == "tool_result")
        assert result["tool_id"] == ask["tool_call_id"]
        if saved:
            assert result["status"] == "completed" and "note saved: milk" in frames[-1]["result"]
        else:
            assert result["status"] == "failed" and frames[-1]["result"] == "OK, I did not save the note."


async def test_wrong_request_id_is_stale_and_the_turn_keeps_waiting(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "save a note: milk"})
        ask = (await ws.until("approval_needed"))[-1]
        await ws.send({"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once", "request_id": "999999"})
        stale = await ws.recv()
        assert stale["type"] == "ERROR" and stale["code"] == "STALE_ANSWER" and stale["request_id"] == "999999"
        await ws.send({"type": "ASK_USER_RESPONSE", "answer": "x", "request_id": ask["id"]})  # wrong kind
        assert (await ws.recv())["code"] == "STALE_ANSWER"
        await ws.send({"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once", "request_id": ask["id"]})
        output = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert output["type"] == "OUTPUT" and "note saved" in output["result"]


async def test_a_disconnected_client_reconnects_and_answers_a_pending_approval(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "save a note: eggs"})
        frames = await ws.until("approval_needed")
        sid, ask = frames[0]["session_id"], frames[-1]
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "ATTACH", "session_id": sid, "last_msg_id": ask["id"]})
        assert (await ws.recv())["status"] == "running"
        await ws.send({"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once", "request_id": ask["id"]})
        output = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert output["type"] == "OUTPUT" and "note saved: eggs" in output["result"]


# -- cancel, busy -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["INTERRUPT", "CANCEL"])
async def test_interrupt_or_cancel_mid_turn_ends_it_as_cancelled(host, kind):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "count to 8 slowly"})
        frames = await ws.until("tool_result")
        await ws.send({"type": kind})
        terminal = (await ws.until(("OUTPUT", "ERROR")))[-1]
        # D29: OUTPUT status cancelled, with the partial result and the session (the prompt kept, turn counted)
        assert terminal["type"] == "OUTPUT" and terminal["status"] == "cancelled", terminal
        assert terminal["result"] == "" and terminal["session_id"] == frames[0]["session_id"]
        assert terminal["session"]["turn"] == 1
        assert {"role": "user", "content": "count to 8 slowly"} in terminal["session"]["messages"]
        assert [i["content"] for i in terminal["chat_items"] if i["type"] == "user"] == ["count to 8 slowly"]
        await ws.send({"type": "INPUT", "prompt": "calculate 2+2"})  # the conversation goes on
        output = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert output["type"] == "OUTPUT" and output["session"]["turn"] == 2, output
    record = await wait_record(host, frames[0]["session_id"], lambda r: r["status"] != "running")
    assert record["status"] == "done" and record["session"]["turn"] == 2


async def test_a_cancelled_turn_is_recorded_cancelled_with_its_session(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "my name is Ada"})
        first = (await ws.until("OUTPUT"))[-1]
        await ws.send({"type": "INPUT", "prompt": "count to 8 slowly"})
        await ws.until("tool_result")
        await ws.send({"type": "INTERRUPT"})
        terminal = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert terminal["type"] == "OUTPUT" and terminal["status"] == "cancelled", terminal
    record = await wait_record(host, first["session_id"], lambda r: r["status"] != "running")
    assert record["status"] == "cancelled" and record["result"] == "" and "error" not in record, record
    assert record["session"]["turn"] == 2 and record["prompt"] == "count to 8 slowly"
    async with await WS.open(host.ws_url) as ws:  # resumed from the record alone: the name is still known
        await ws.send({"type": "CONNECT", "session_id": first["session_id"]})
        await ws.until("AGENT_PROFILE")
        await ws.send({"type": "INPUT", "prompt": "what is my name"})
        output = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert output["type"] == "OUTPUT" and output["result"] == "Your name is Ada.", output
        assert output["session"]["turn"] == 3


async def test_interrupt_with_nothing_running_is_an_error(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "CONNECT"})
        await ws.until("AGENT_PROFILE")
        await ws.send({"type": "INTERRUPT"})
        error = await ws.recv()
        assert error["type"] == "ERROR" and error["message"] == "interrupt requires an active turn"


async def test_second_input_while_running_is_refused_and_the_first_completes(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "count to 3 slowly"})
        await ws.until("tool_call")
        await ws.send({"type": "INPUT", "prompt": "what time is it"})
        frames = await ws.until(("OUTPUT", "ERROR"))
        assert frames[-1]["type"] == "ERROR" and frames[-1]["message"] == "session already has a running agent"
        output = (await ws.until("OUTPUT"))[-1]
        assert output["result"] == "1, 2, 3"


# -- bad frames ---------------------------------------------------------------------------------------------------


async def test_bad_frames_get_errors_and_the_socket_stays_usable(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send("{not json")
        error = await ws.recv()
        assert error["type"] == "ERROR" and error["message"].startswith("Invalid JSON")
        await ws.send(b"\x00\x01binary")
        assert (await ws.recv())["type"] == "ERROR"
        await ws.send({"type": "CONNECT"})
        await ws.until("AGENT_PROFILE")
        await ws.send({"type": "NOPE"})
        assert (await ws.recv())["message"] == "unknown message type: 'NOPE'"
        await ws.send({"type": "INPUT", "prompt": "x" * 20_000})
        too_big = await ws.recv()
        assert too_big["type"] == "ERROR"
        assert too_big["message"] == f"message too large (max {int(0.01 * 1024 * 1024)} bytes)"
        frames = await turn(ws, "calculate 1+1")
        assert frames[-1]["type"] == "OUTPUT" and frames[-1]["result"] == "1+1 = 2"


# -- resume -------------------------------------------------------------------------------------------------------


async def wait_record(host, sid: str, done, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=host.url) as client:
        while True:
            response = await client.get(f"/sessions/{sid}")
            if response.status_code == 200 and done(response.json()):
                return response.json()
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.1)


async def _start_and_drop(host, prompt: str, seen: int) -> tuple[str, list[dict]]:
    """Start a turn, read ``seen`` events, drop the socket."""
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": prompt})
        connected = await ws.recv()
        got = [await ws.recv() for _ in range(seen)]
    return connected["session_id"], got


@pytest.mark.parametrize("handshake", ["ATTACH", "CONNECT"])
async def test_resume_mid_turn_sends_exactly_the_missed_events_then_live_then_output(host, handshake):
    sid, before = await _start_and_drop(host, "count to 8 slowly", seen=4)
    await asyncio.sleep(0.8)  # events happen while nobody is connected
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": handshake, "session_id": sid, "last_msg_id": before[-1]["id"]})
        connected = await ws.recv()
        assert connected["type"] == "CONNECTED" and connected["status"] == "running" and connected["session_id"] == sid
        after = [f for f in await ws.until("OUTPUT", timeout=20) if f["type"] != "AGENT_PROFILE"]
    ids = [int(f["id"]) for f in before + after]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # no gap, no duplicate, original ids
    assert after[-1]["result"] == "1, 2, 3, 4, 5, 6, 7, 8"


async def test_closing_mid_turn_does_not_stop_it(host):
    sid, _ = await _start_and_drop(host, "count to 3 slowly", seen=2)
    record = await wait_record(host, sid, lambda r: r["status"] != "running")
    assert record["status"] == "done" and record["result"] == "1, 2, 3"


async def test_attach_finished_is_completed_with_result_and_unknown_is_expired(host):
    async with await WS.open(host.ws_url) as ws:
        output = (await turn(ws, "calculate 2*21"))[-1]
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "ATTACH", "session_id": output["session_id"]})
        connected = await ws.recv()
        assert connected["status"] == "completed" and connected["result"] == output["result"]
    async with await WS.open(host.ws_url) as ws:
        unknown = str(uuid.uuid4())
        await ws.send({"type": "ATTACH", "session_id": unknown})
        assert await ws.recv() == {"type": "CONNECTED", "session_id": unknown, "status": "expired"}


async def test_a_second_connection_on_the_session_sees_a_turn_the_first_one_starts(host):
    async with await WS.open(host.ws_url) as tab1, await WS.open(host.ws_url) as tab2:
        await tab1.send({"type": "CONNECT"})
        sid = (await tab1.until("AGENT_PROFILE"))[0]["session_id"]
        await tab2.send({"type": "CONNECT", "session_id": sid})
        await tab2.until("AGENT_PROFILE")
        mine = await turn(tab1, "calculate 4*4")
        theirs = await tab2.until(("OUTPUT", "ERROR"))
        assert theirs[0] == {"type": "user_message", "content": "calculate 4*4", "session_id": sid}
        assert [f["id"] for f in theirs[1:]] == [f["id"] for f in [*events_only(mine), mine[-1]]]
        again = await turn(tab2, "calculate 5*5")  # and the other way round, for the next turn
        seen = await tab1.until(("OUTPUT", "ERROR"))
        assert seen[0]["type"] == "user_message" and seen[-1]["id"] == again[-1]["id"]


async def test_input_sent_the_moment_output_arrives_is_never_busy(host):
    """The turn leaves the running set before its OUTPUT is delivered (it once raced the next INPUT)."""

    async def chat(ws: WS) -> list[str]:
        return [(await turn(ws, f"calculate {i}+1"))[-1].get("message", "ok") for i in range(15)]

    sockets = [await WS.open(host.ws_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(chat(ws) for ws in sockets))
    finally:
        for ws in sockets:
            await ws.close()
    assert all(r == "ok" for rs in results for r in rs), results


async def test_interrupt_while_waiting_for_an_approval_ends_the_turn(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "save a note: bread"})
        frames = await ws.until("approval_needed")
        await ws.send({"type": "INTERRUPT"})
        terminal = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert terminal["type"] == "OUTPUT" and terminal["status"] == "cancelled", terminal
    record = await wait_record(
        host, frames[0]["session_id"], lambda r: r["status"] not in ("running", "waiting_approval")
    )
    assert record["status"] == "cancelled"


async def test_attach_without_session_id_and_session_status(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "ATTACH"})
        assert (await ws.recv())["message"] == "session_id required"
        await ws.send({"type": "INPUT", "prompt": "count to 2 slowly"})
        sid = (await ws.recv())["session_id"]
        await ws.send({"type": "SESSION_STATUS", "session": {"session_id": sid}})
        status = (await ws.until("SESSION_STATUS"))[-1]
        assert status["status"] == "running"
        await ws.until("OUTPUT")
        await ws.send({"type": "SESSION_STATUS", "session": {"session_id": sid}})
        assert (await ws.until("SESSION_STATUS"))[-1]["status"] == "connected"
        await ws.send({"type": "SESSION_STATUS", "session": {"session_id": str(uuid.uuid4())}})
        assert (await ws.until("SESSION_STATUS"))[-1]["status"] == "not_found"


async def test_an_http_turn_cancelled_from_a_websocket_answers_200_cancelled(host):
    """D29 at the HTTP door: the ``POST /input`` whose turn a viewer cancels answers like the OUTPUT does."""
    sid = str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=30) as http:
        posting = asyncio.ensure_future(
            http.post(host.url + "/input", json={"prompt": "count to 40 slowly", "session": {"session_id": sid}})
        )
        await wait_record(host, sid, lambda r: r["status"] == "running")
        async with await WS.open(host.ws_url) as ws:
            await ws.send({"type": "ATTACH", "session_id": sid})
            assert (await ws.recv())["status"] == "running"
            await ws.send({"type": "CANCEL"})
            assert (await ws.until("OUTPUT"))[-1]["status"] == "cancelled"
        reply = await posting
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "cancelled" and body["result"] == "" and body["session"]["turn"] == 1
