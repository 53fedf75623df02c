"""The WebSocket door against real hosts (issue 15): rows W20 (DNS rebinding, D22), W21 (a repeated signed
handshake, D20), W22 (a client that never reads) and W12 (a frame flood).

W20: a page on any domain that rebinds its name to 127.0.0.1 opens ``/ws`` with ``Host`` and ``Origin`` both its
own. The upgrade is closed 4003 before any frame; loopback and the public domain still connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import httpx
import pytest
import websockets
from nacl.signing import SigningKey

from tests.conftest import NO_TURN_LIMITS, HostProcess
from tests.hostile.conftest import Snapshot
from tests.support.nonreader import flood_a_non_reader
from tests.support.ws import WS
from trust.signing import sign_command, sign_payload


def our_address(host) -> str:
    return httpx.get(host.url + "/info", timeout=10).json()["address"]


async def open_as(port: int, host: str, origin: str | None = None) -> websockets.ClientConnection:
    """A socket to our loopback port whose handshake says ``Host: host`` (what a rebinding browser sends)."""
    sock = socket.create_connection(("127.0.0.1", port))
    headers = {"Origin": origin} if origin else None
    return await websockets.connect(
        f"ws://{host}/ws", sock=sock, additional_headers=headers, ping_interval=None, open_timeout=10
    )


async def first_event(ws: websockets.ClientConnection) -> dict | int:
    """The first frame as a dict, or the close code when the host closes first."""
    try:
        return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else -1


async def runs_a_turn(ws: websockets.ClientConnection) -> dict:
    await ws.send(json.dumps({"type": "INPUT", "prompt": "calculate 2+3"}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame.get("type") in ("OUTPUT", "ERROR"):
            return frame


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        pytest.param("evil.example:{port}", "http://evil.example:{port}", id="W20 Host and Origin both evil"),
        pytest.param("evil.example:{port}", None, id="W20 evil Host, no Origin"),
        pytest.param("evil.example", "http://evil.example", id="W20 evil Host without port"),
    ],
)
async def test_w20_a_rebinding_page_is_closed_4003_before_any_frame(ws_host, host, origin):
    port = ws_host.port
    ws = await open_as(port, host.format(port=port), origin.format(port=port) if origin else None)
    with contextlib.suppress(websockets.ConnectionClosed):  # the close may already have come
        await ws.send(json.dumps({"type": "INPUT", "prompt": "calculate 2+3"}))
    assert await first_event(ws) == 4003
    snap = Snapshot(ws_host)
    snap.assert_nothing_recorded()
    snap.assert_healthy()
    assert "refusing a WebSocket upgrade for Host 'evil.example" in ws_host.output()


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        pytest.param("127.0.0.1:{port}", "http://127.0.0.1:{port}", id="W20 loopback with its Origin (the /docs UI)"),
        pytest.param("localhost:{port}", "http://localhost:{port}", id="W20 localhost"),
        pytest.param("127.0.0.1:{port}", None, id="W20 loopback, no Origin"),
    ],
)
async def test_w20_allowed_hosts_still_connect(ws_host, host, origin):
    port = ws_host.port
    ws = await open_as(port, host.format(port=port), origin.format(port=port) if origin else None)
    output = await runs_a_turn(ws)
    assert output["type"] == "OUTPUT" and output["result"] == "2+3 = 5", output
    await ws.close()


async def test_w20_the_public_domain_is_allowed_and_its_origin_too(start_host):
    host = start_host(env={"AGENT_PUBLIC_DOMAIN": "agent.example"})
    ws = await open_as(host.port, "agent.example", "https://agent.example")
    output = await runs_a_turn(ws)
    assert output["type"] == "OUTPUT", output
    await ws.close()
    ws = await open_as(host.port, "other.example", "http://other.example")
    assert await first_event(ws) == 4003


# --- W21: a repeated signed handshake (D20 amended, PROTOCOL §2.4) -------------------------------------------
#
# The released client signs its CONNECT payload {to, timestamp, signed_commands: 1} without a nonce, so a repeat
# is not refused. Anyone who saw one frame may resend it, with the signer's session id at top level or with its
# type changed to ATTACH: the repeat must show nothing of any session until a freshly signed command arrives.

SECRET = "my name is Zebediah"


def v2_connect(key: SigningKey, to: str) -> dict:
    return {"type": "CONNECT", **sign_payload(key, {"to": to, "timestamp": int(time.time()), "signed_commands": 1})}


async def signed_turn(ws: WS, key: SigningKey, to: str, prompt: str) -> dict:
    await ws.send(sign_command(key, {"type": "INPUT", "prompt": prompt}, to=to))
    output = (await ws.until(("OUTPUT", "ERROR"), timeout=30))[-1]
    assert output["type"] == "OUTPUT", output
    return output


async def victim(host, key: SigningKey, to: str) -> tuple[WS, dict, str]:
    """The signer's own socket after one turn that stored ``SECRET``; returns (socket, its CONNECT, session id)."""
    frame = v2_connect(key, to)
    ws = await WS.open(host.ws_url)
    await ws.send(frame)
    await ws.until("AGENT_PROFILE")
    output = await signed_turn(ws, key, to, SECRET)
    return ws, frame, output["session_id"]


@pytest.mark.parametrize("kind", ["CONNECT", "ATTACH"])
async def test_w21_a_resent_signed_connect_reveals_nothing_until_a_signed_command(ws_host, kind):
    key, to = SigningKey.generate(), our_address(ws_host)
    owner, frame, sid = await victim(ws_host, key, to)
    thief = await WS.open(ws_host.ws_url)
    await thief.send({**frame, "type": kind, "session_id": sid, "last_msg_id": "0"})
    connected = await thief.recv()
    assert connected["type"] == "CONNECTED" and connected["session_id"] == sid, connected
    assert connected["status"] == ("new" if kind == "CONNECT" else "expired")
    assert not {"session", "server_newer", "chat_items", "result"} & set(connected), connected
    await thief.send({"type": "SESSION_STATUS", "session_id": sid})
    status = (await thief.until("SESSION_STATUS"))[-1]
    assert status["status"] == "not_found"
    await signed_turn(owner, key, to, "count to 3 slowly")  # the signer's next turn, live
    seen = thief.seen + await thief.nothing_for(1.0)
    assert SECRET not in json.dumps(seen) and "Zebediah" not in json.dumps(seen)
    assert not [f for f in seen if f.get("type") in ("tool_call", "tool_result", "OUTPUT", "user_message")], seen
    # A command the thief cannot sign is refused and proves nothing; the socket still shows nothing.
    await thief.send({"type": "INPUT", "prompt": "what is my name"})
    refused = (await thief.until(("ERROR", "OUTPUT")))[-1]
    assert refused["type"] == "ERROR" and refused["message"] == "unauthorized: signed command required"
    await owner.close()
    await thief.close()


async def test_w21_the_signer_itself_continues_its_session_after_a_repeated_connect(ws_host):
    """The released client's second turn within a second resends a byte-identical CONNECT: once its signed INPUT
    arrives, the requested session is merged and the turn runs in it."""
    key, to = SigningKey.generate(), our_address(ws_host)
    owner, frame, sid = await victim(ws_host, key, to)
    await owner.close()
    again = await WS.open(ws_host.ws_url)
    await again.send({**frame, "session_id": sid})
    connected = (await again.until("AGENT_PROFILE"))[0]
    assert connected["session_id"] == sid and "session" not in connected
    output = await signed_turn(again, key, to, "what is my name")
    assert output["session_id"] == sid and "Zebediah" in output["result"], output
    await again.close()


async def test_w21_a_repeated_plain_signed_connect_is_downgraded_to_anonymous_at_careful(ws_host):
    """§2.4: without ``signed_commands: 1`` the repeat is served at careful as an anonymous socket (refused before),
    which may not resume the signer's session."""
    key, to = SigningKey.generate(), our_address(ws_host)
    frame = {"type": "CONNECT", **sign_payload(key, {"to": to, "timestamp": int(time.time())})}
    async with await WS.open(ws_host.ws_url) as first:
        await first.send(frame)
        await first.until("AGENT_PROFILE")
        await first.send({"type": "INPUT", "prompt": SECRET})
        sid = (await first.until("OUTPUT"))[-1]["session_id"]
    async with await WS.open(ws_host.ws_url) as repeat:
        await repeat.send({**frame, "session_id": sid})
        connected = await repeat.recv()
        assert connected["type"] == "CONNECTED" and connected["session_id"] != sid, connected
        assert "Zebediah" not in json.dumps(connected)
        await repeat.send({"type": "INPUT", "prompt": "what is my name"})
        output = (await repeat.until(("OUTPUT", "ERROR")))[-1]
        assert output["type"] == "OUTPUT" and "Zebediah" not in output["result"], output


# --- W22: a client that never reads; W12: a frame flood ----------------------------------------------------------

FLOOD_YAML = "ws_send_buffer_mb: 1\nws_max_frames_per_second: 50\n"


@pytest.fixture(scope="module")
def flood_host(tmp_path_factory):
    """The flood agent (``flood N SIZE`` streams N events of SIZE bytes) with a 1 MB send buffer per socket."""
    folder = tmp_path_factory.mktemp("flood")
    (folder / ".co").mkdir()
    (folder / ".co" / "host.yaml").write_text(FLOOD_YAML)
    host = HostProcess(folder, "tests.agents:flood_factory", *NO_TURN_LIMITS).start()
    yield host
    host.stop()


def test_w22_a_client_that_never_reads_is_closed_and_its_turn_is_stored(flood_host):
    count, size = 400, 100_000  # 40 MB of events for a socket allowed to owe 1 MB
    flood_a_non_reader(flood_host.port, flood_host.url, flood_host.output, count=count, size=size)
    assert "over 1048576 bytes unsent and none read for 10 s" in flood_host.output()
    Snapshot(flood_host).assert_healthy()


async def test_w22_a_reading_client_gets_the_whole_stream_past_the_buffer(flood_host):
    """20 MB through a 1 MB send buffer: the sender waits for the reader, nothing is lost or repeated."""
    async with await WS.open(flood_host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "flood 200 100000"})
        frames = await ws.until(("OUTPUT", "ERROR"), timeout=120)
        assert frames[-1]["type"] == "OUTPUT" and frames[-1]["result"] == "flooded 200"
        assert [f["number"] for f in frames if f["type"] == "chunk"] == list(range(200))


async def test_w12_a_pong_flood_closes_that_socket_and_no_one_else_notices(flood_host):
    async with await WS.open(flood_host.ws_url) as other:
        flood = await websockets.connect(flood_host.ws_url, ping_interval=None)
        pong = json.dumps({"type": "PONG"})
        with contextlib.suppress(websockets.ConnectionClosed):
            # 300 at once: far past 50 a second (this host's ws_max_frames_per_second), and few enough that the
            # host has read them all when it closes (a close with unread bytes is a TCP reset, which would
            # discard the ERROR and the close frame still unread on our side: a flake under load)
            for _ in range(300):
                await flood.send(pong)
        error = json.loads(await asyncio.wait_for(flood.recv(), 10))
        assert error == {"type": "ERROR", "code": "TOO_MANY_FRAMES", "message": "too many messages (max 50 a second)"}
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(flood.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        assert httpx.get(flood_host.url + "/health", timeout=5).status_code == 200
        await other.send({"type": "INPUT", "prompt": "still here"})
        output = (await other.until(("OUTPUT", "ERROR")))[-1]
        assert output == {**output, "type": "OUTPUT", "result": "echo: still here"}
    assert "more than 50 frames a second" in flood_host.output()
