"""HARDENING §3 WebSocket rows W1-W4, W7-W9, W11, W18 against one real host (10 KiB message cap).
(W12, W20-W22: ``test_ws_door.py``.)

After each row the socket must still work (I4: a CONNECT/turn after the bad frame succeeds), the host
must answer /health and its JSONL must parse (I3).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import httpx
import pytest
import websockets
from nacl.signing import SigningKey

from tests.hostile.conftest import Snapshot
from tests.support.ws import WS
from trust.signing import sign_payload

CAP = int(0.01 * 1024 * 1024)


async def still_works(ws: WS) -> None:
    """I4: the same socket still runs a turn after the hostile frame."""
    await ws.send({"type": "INPUT", "prompt": "calculate 2+3"})
    frames = await ws.until(("OUTPUT", "ERROR"))
    assert frames[-1]["type"] == "OUTPUT" and frames[-1]["result"] == "2+3 = 5", frames[-1]


BAD_FRAMES = [
    ("W1 binary", b"\x00\x01binary", "binary frames are not supported"),
    ("W2 empty", "", "Invalid JSON"),
    ("W2 null", "null", "message must be a JSON object"),
    ("W2 list", "[]", "message must be a JSON object"),
    ("W2 number", "42", "message must be a JSON object"),
    ("W2 not json", "{not json", "Invalid JSON"),
    ("W3 no type", json.dumps({"prompt": "x"}), "unknown message type: None"),
    ("W3 type 5", json.dumps({"type": 5}), "unknown message type: 5"),
    ("W3 type NOPE", json.dumps({"type": "NOPE"}), "unknown message type: 'NOPE'"),
    ("W3 type NOPE before CONNECT", json.dumps({"type": "NOPE"}), "authenticate first (send CONNECT)"),
    (
        "W4 over the app cap",
        json.dumps({"type": "INPUT", "prompt": "x" * 20_000}),
        f"message too large (max {CAP} bytes)",
    ),
    (
        "W2b lone surrogate in session.messages",
        json.dumps({"type": "INPUT", "prompt": "x", "session": {"messages": [{"role": "user", "content": "a\ud800"}]}}),
        "session.messages[0].content is not valid Unicode",
    ),
    (
        "W2c http image_url in session.messages",
        json.dumps(
            {
                "type": "INPUT",
                "prompt": "x",
                "session": {
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}],
                        }
                    ]
                },
            }
        ),
        "session.messages[0].content[0].image_url.url must be a data URL",
    ),
    ("W18 INTERRUPT idle", json.dumps({"type": "INTERRUPT"}), "interrupt requires an active turn"),
    ("W18 INTERRUPT before CONNECT", json.dumps({"type": "INTERRUPT"}), "authenticate first (send CONNECT)"),
]


@pytest.mark.parametrize(("frame", "message"), [pytest.param(*row[1:], id=row[0]) for row in BAD_FRAMES])
async def test_bad_frames_get_one_error_and_the_socket_stays_open(ws_host, frame, message, request):
    snap = Snapshot(ws_host)
    async with await WS.open(ws_host.ws_url) as ws:
        if request.node.callspec.id in (
            "W3 type NOPE",
            "W18 INTERRUPT idle",
            "W2b lone surrogate in session.messages",
            "W2c http image_url in session.messages",
        ):
            await ws.send({"type": "CONNECT"})
            await ws.until("AGENT_PROFILE")
        await ws.send(frame)
        error = await ws.recv()
        assert error["type"] == "ERROR"
        if message == "Invalid JSON":
            assert error["message"].startswith("Invalid JSON")
            assert len(error.get("received", "")) <= 200
        else:
            assert error["message"] == message
        assert "Traceback" not in json.dumps(error)
        snap.assert_nothing_recorded()
        await still_works(ws)
    snap.assert_healthy()


async def test_w4_over_the_transport_cap_drops_only_that_socket(ws_host):
    async with await WS.open(ws_host.ws_url) as other:
        sock = await websockets.connect(ws_host.ws_url, max_size=2**24, ping_interval=None)
        with pytest.raises(websockets.ConnectionClosed):
            await sock.send("x" * (2 * 1024 * 1024))
            for _ in range(50):
                await sock.recv()
        await still_works(other)
    Snapshot(ws_host).assert_healthy()


async def test_w7_input_while_running_and_a_burst_of_1000_inputs(ws_host):
    """The burst is far over ``ws_max_frames_per_second`` (200): one ERROR, close 4429 (W12); the running turn
    is not the socket's and finishes and is stored; the host serves the next socket."""
    async with await WS.open(ws_host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "count to 3 slowly"})
        started = (await ws.until("tool_call"))[-1]
        await ws.send({"type": "INPUT", "prompt": "what time is it"})
        frames = await ws.until(("OUTPUT", "ERROR"))
        assert frames[-1] == {**frames[-1], "type": "ERROR", "message": "session already has a running agent"}
        burst = json.dumps({"type": "INPUT", "prompt": "calculate 1+1"})
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(1000):
                await ws.sock.send(burst)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        errors = [f for f in ws.seen if f.get("type") == "ERROR"][1:]
        assert errors and all(e["message"] == "session already has a running agent" for e in errors[:-1])
        assert errors[-1]["code"] == "TOO_MANY_FRAMES"
    session_id = started["session_id"]
    deadline = time.monotonic() + 30
    while (record := httpx.get(f"{ws_host.url}/sessions/{session_id}", timeout=10).json())["status"] == "running":
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    assert record["status"] == "done" and record["result"] == "1, 2, 3", record
    async with await WS.open(ws_host.ws_url) as fresh:
        await still_works(fresh)
    Snapshot(ws_host).assert_healthy()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            {"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once"}, id="W8 approval, nothing pending"
        ),
        pytest.param(
            {"type": "ASK_USER_RESPONSE", "answer": "x", "request_id": "999"}, id="W8 ask_user, nothing pending"
        ),
    ],
)
async def test_w8_answers_to_questions_never_asked_are_stale(ws_host, answer):
    async with await WS.open(ws_host.ws_url) as ws:
        await ws.send({"type": "CONNECT"})
        await ws.until("AGENT_PROFILE")
        await ws.send(answer)
        stale = await ws.recv()
        assert stale["type"] == "ERROR" and stale["code"] == "STALE_ANSWER"
        await still_works(ws)


async def test_w8_wrong_request_id_is_stale_and_the_turn_keeps_waiting(ws_host):
    async with await WS.open(ws_host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "save a note: bread"})
        ask = (await ws.until("approval_needed"))[-1]
        await ws.send({"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once", "request_id": "nope"})
        assert (await ws.recv())["code"] == "STALE_ANSWER"
        await ws.send({"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once", "request_id": ask["id"]})
        output = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert output["type"] == "OUTPUT" and "note saved" in output["result"]


@pytest.mark.parametrize(
    "answer",
    [{"approved": "yes", "scope": "once"}, {"approved": True, "scope": "forever"}],
    ids=["W9 approved yes", "W9 scope forever"],
)
async def test_w9_malformed_approval_is_a_refusal(ws_host, answer):
    async with await WS.open(ws_host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "save a note: jam"})
        ask = (await ws.until("approval_needed"))[-1]
        await ws.send({"type": "APPROVAL_RESPONSE", "request_id": ask["id"], **answer})
        frames = await ws.until(("OUTPUT", "ERROR"))
        assert frames[-1]["type"] == "OUTPUT" and frames[-1]["result"] == "OK, I did not save the note."
        assert next(f for f in frames if f["type"] == "tool_result")["status"] == "failed"


async def test_w11_connect_naming_another_signers_session_gets_a_new_one(ws_host):
    key = SigningKey.generate()
    to = httpx.get(ws_host.url + "/info", timeout=10).json()["address"]
    signed = sign_payload(key, {"prompt": "my name is Ada", "to": to, "timestamp": int(time.time())})
    victim = httpx.post(ws_host.url + "/input", json=signed, timeout=30)
    assert victim.status_code == 200, victim.text
    victim_id = victim.json()["session_id"]
    async with await WS.open(ws_host.ws_url) as ws:
        await ws.send({"type": "CONNECT", "session_id": victim_id})
        frames = await ws.until("AGENT_PROFILE")
        assert frames[0]["type"] == "CONNECTED" and frames[0]["session_id"] != victim_id
        await ws.send({"type": "INPUT", "prompt": "what is my name"})
        output = (await ws.until(("OUTPUT", "ERROR")))[-1]
        assert "Ada" not in json.dumps(output)
        assert output.get("session_id") != victim_id
    Snapshot(ws_host).assert_healthy()


@pytest.mark.parametrize("kind", ["CONNECT", "ATTACH"])
async def test_w11_ten_kilobyte_last_msg_id(ws_host, kind):
    async with await WS.open(ws_host.ws_url) as ws:
        await ws.send({"type": kind, "session_id": str(uuid.uuid4()), "last_msg_id": "9" * 10_000})
        first = await ws.recv()
        assert first["type"] in ("CONNECTED", "ERROR")
        await ws.nothing_for(0.3)
        await still_works(ws)
    Snapshot(ws_host).assert_healthy()
