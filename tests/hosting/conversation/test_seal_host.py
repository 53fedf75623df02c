"""Sealed sockets on our host's /ws (PROTOCOL §4.8, D19; §10 items 80-84), driven by the released client's own
sealing code against a real host process: the handshake, sealed frames both ways, the exact refusals, tampered,
reordered and replayed frames, the sealed peer rule, the ledger not consulted inside a seal, and every feature
of an unsealed socket (events, questions, approvals, uploads, resume, cancel) working sealed."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
import websockets
from connectonion.network import sealed as released

from tests.conftest import NO_TURN_LIMITS
from tests.support.uploads import data_url
from trust.signing import canonical_bytes, signature_valid

from .conftest import SealedWS, command, new_keys, released_keys, signed_connect


@pytest.fixture(scope="module")
def host(module_hosts):
    return module_hosts(*NO_TURN_LIMITS, name="seal")


@pytest.fixture(scope="module")
def address(host) -> str:
    return httpx.get(host.url + "/info").json()["address"]


async def sealed_turn(ws: SealedWS, me, address: str, prompt: str, **extra) -> list[dict]:
    await ws.send(command(me, address, {"type": "INPUT", "prompt": prompt, **extra}))
    return await ws.until("OUTPUT", "ERROR")


async def hello(ws: SealedWS, me, address: str, **top) -> list[dict]:
    await ws.send(signed_connect(me, address, **top))
    return await ws.until("AGENT_PROFILE", "ERROR")


async def closed_with(sock, timeout: float = 5) -> int | None:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(sock.recv(), timeout)
    return sock.close_code


def test_info_says_the_host_seals(host):
    assert httpx.get(host.url + "/info").json()["seal"] is True


# -- item 80: SEAL -> SEALED_OK --------------------------------------------------------------------------------


async def test_seal_is_answered_with_a_sealed_ok_signed_by_our_address(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        ok = ws.ok
        assert ok["type"] == "SEALED_OK" and ok["from"] == address and ok["to"] == me.address
        payload = {k: ok[k] for k in ("type", "to", "from", "ephemeral", "client_ephemeral")}
        assert signature_valid(bytes.fromhex(address[2:]), canonical_bytes(payload), bytes.fromhex(ok["signature"]))
        assert len(ok["ephemeral"]) == 64


async def test_sealed_ok_echoes_the_seals_ephemeral(host, address):
    me = new_keys()
    sock = await websockets.connect(host.ws_url)
    seal, _ = released.client_hello(released_keys(me), address)
    await sock.send(json.dumps(seal))
    ok = json.loads(await asyncio.wait_for(sock.recv(), 5))
    assert ok["client_ephemeral"] == seal["ephemeral"]
    await sock.close()


# -- item 81: a sealed conversation ------------------------------------------------------------------------------


async def test_sealed_connect_and_input_give_sealed_frames_that_open_with_the_clients_box(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        greeting = await hello(ws, me, address)
        assert [f["type"] for f in greeting] == ["CONNECTED", "AGENT_PROFILE"]
        assert greeting[0]["status"] == "new" and greeting[1]["sealed"] is True
        frames = await sealed_turn(ws, me, address, "translate hello to spanish", input_id="a")
        kinds = [f["type"] for f in frames]
        assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("OUTPUT")
        assert frames[-1]["input_id"] == "a" and "hola" in frames[-1]["result"]
        # on the wire every frame after SEALED_OK was sealed, counted 1, 2, 3 … and carried no plaintext
        assert {f["type"] for f in ws.outer} == {"SEALED"}
        assert [f["n"] for f in ws.outer] == list(range(1, len(ws.outer) + 1))
        wire = json.dumps(ws.outer)
        assert "hola" not in wire and "translate" not in wire and me.address not in wire


# -- item 82: refusals ------------------------------------------------------------------------------------------


def _tamper(seal: dict, how: str) -> dict:
    if how == "another host":
        return {**seal, "to": "0x" + "ab" * 32}
    if how == "missing ephemeral":
        return {k: v for k, v in seal.items() if k != "ephemeral"}
    if how == "stale":
        return {**seal, "timestamp": seal["timestamp"] - 400}
    if how == "bad signature":
        return {**seal, "ephemeral": "00" * 32}
    if how == "string timestamp":
        return {**seal, "timestamp": str(seal["timestamp"])}
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("another host", "SEAL is addressed to another host"),
        ("missing ephemeral", "SEAL is missing ephemeral"),
        ("stale", "SEAL is stale"),
        ("bad signature", "SEAL signature does not verify"),
        ("string timestamp", "SEAL timestamp is not a number"),
    ],
)
async def test_a_bad_seal_is_refused_then_closed_with_4003(host, address, how, reason):
    me = new_keys()
    sock = await websockets.connect(host.ws_url)
    seal, _ = released.client_hello(released_keys(me), address)
    await sock.send(json.dumps(_tamper(seal, how)))
    error = json.loads(await asyncio.wait_for(sock.recv(), 5))
    assert error == {"type": "ERROR", "message": f"seal refused: {reason}"}
    assert await closed_with(sock) == 4003


async def test_the_released_client_refuses_a_sealed_ok_meant_for_another_seal(host, address):
    me = new_keys()
    sock = await websockets.connect(host.ws_url)
    first, _ = released.client_hello(released_keys(me), address)
    second, key = released.client_hello(released_keys(me), address)
    await sock.send(json.dumps(first))
    ok = json.loads(await asyncio.wait_for(sock.recv(), 5))
    with pytest.raises(released.SealRefused):
        released.client_finish(ok, second, key)
    await sock.close()


async def test_a_second_seal_inside_the_seal_is_refused(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        again, _ = released.client_hello(released_keys(me), address)
        await ws.send(again)
        error = await ws.recv()
        assert error == {"type": "ERROR", "message": "seal refused: this socket is already sealed"}
        assert await closed_with(ws.raw) == 4003


# -- item 83 and its siblings: frames that must not open --------------------------------------------------------


async def _rejected(ws: SealedWS) -> dict:
    error = await ws.recv_outer()
    assert "c" not in error  # in the clear: the box may be what failed
    assert await closed_with(ws.raw) == 4003
    return error


async def test_a_repeated_counter_is_rejected_and_the_session_ends(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        frame = ws.channel.seal(signed_connect(me, address))
        await ws.send_raw(frame)
        await ws.until("AGENT_PROFILE")
        await ws.send_raw(frame)  # the same sealed frame again: a replay
        error = await _rejected(ws)
        assert error == {"type": "ERROR", "message": "sealed frame rejected: sealed frame out of order"}


async def test_a_lower_counter_is_rejected(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        first = ws.channel.seal({"type": "PONG"})
        second = ws.channel.seal({"type": "PONG"})
        await ws.send_raw(second)
        await ws.send_raw(first)  # reordered
        error = await _rejected(ws)
        assert error["message"] == "sealed frame rejected: sealed frame out of order"


async def test_tampered_ciphertext_is_rejected(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        frame = ws.channel.seal(signed_connect(me, address))
        raw = bytearray(base64.b64decode(frame["c"]))
        raw[20] ^= 1
        await ws.send_raw({**frame, "c": base64.b64encode(bytes(raw)).decode()})
        error = await _rejected(ws)
        assert error["message"] == "sealed frame rejected: sealed frame does not open"


async def test_a_counter_moved_to_another_frame_does_not_open(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        frame = ws.channel.seal({"type": "PONG"})
        await ws.send_raw({**frame, "n": 2})  # the nonce is the counter: a box made for n=1 fails at n=2
        error = await _rejected(ws)
        assert error["message"] == "sealed frame rejected: sealed frame does not open"


async def test_a_plain_frame_on_a_sealed_socket_is_rejected(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        await ws.send_raw(signed_connect(me, address))
        error = await _rejected(ws)
        assert error["message"] == "sealed frame rejected: expected a SEALED frame, got 'CONNECT'"


async def test_a_sealed_frame_without_a_seal_is_not_a_handshake(host, address):
    async with websockets.connect(host.ws_url) as sock:
        await sock.send(json.dumps({"type": "SEALED", "n": 1, "c": "AAAA"}))
        error = json.loads(await asyncio.wait_for(sock.recv(), 5))
        assert error == {"type": "ERROR", "message": "authenticate first (send CONNECT)"}


async def test_invalid_json_inside_the_seal_is_an_error_and_the_socket_stays(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        n = ws.channel._sent = ws.channel._sent + 1
        cipher = ws.channel._box.encrypt(b"[1,", released._nonce(released._CLIENT_TO_HOST, n)).ciphertext
        await ws.send_raw({"type": "SEALED", "n": n, "c": base64.b64encode(cipher).decode()})
        error = await ws.recv()
        assert error["type"] == "ERROR" and error["message"].startswith("Invalid JSON") and error["received"] == "[1,"
        assert (await hello(ws, me, address))[0]["type"] == "CONNECTED"


# -- item 84 and §2.4: who may speak inside a seal ----------------------------------------------------------------


@pytest.mark.parametrize("who", ["another key", "unsigned"])
async def test_a_handshake_not_signed_by_the_sealed_peer_is_refused(host, address, who):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        await ws.send(signed_connect(new_keys(), address) if who == "another key" else {"type": "CONNECT"})
        error = await ws.recv()
        assert error == {"type": "ERROR", "message": "unauthorized: CONNECT is not signed by the sealed peer"}


async def test_inside_a_seal_the_ledger_is_not_consulted(host, address):
    """One byte-identical signed CONNECT, resumed in two seals: both get the session (unsealed, the repeat would
    be told ``new`` and shown nothing, D20)."""
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        await hello(ws, me, address)
        output = (await sealed_turn(ws, me, address, "my name is Ada"))[-1]
    again = signed_connect(me, address, session_id=output["session_id"])
    for _ in range(2):
        async with await SealedWS.open(host.ws_url, me, address) as ws:
            await ws.send(again)
            connected = (await ws.until("AGENT_PROFILE"))[0]
            assert connected["status"] == "connected" and connected["session_id"] == output["session_id"]
            reply = (await sealed_turn(ws, me, address, "what is my name"))[-1]
            assert reply["result"] == "Your name is Ada."


async def test_two_sockets_sealed_by_one_key_have_separate_boxes(host, address):
    me = new_keys()
    async with (
        await SealedWS.open(host.ws_url, me, address) as one,
        await SealedWS.open(host.ws_url, me, address) as two,
    ):
        assert one.ok["ephemeral"] != two.ok["ephemeral"]
        await two.send_raw(one.channel.seal(signed_connect(me, address)))  # sealed for the other socket
        error = await _rejected(two)
        assert error["message"] == "sealed frame rejected: sealed frame does not open"


# -- everything that works unsealed works sealed --------------------------------------------------------------


async def test_sealed_question_is_answered(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        await hello(ws, me, address)
        await ws.send(command(me, address, {"type": "INPUT", "prompt": "quiz me"}))
        ask = (await ws.until("ask_user"))[-1]
        await ws.send(command(me, address, {"type": "ASK_USER_RESPONSE", "answer": "Paris", "request_id": ask["id"]}))
        assert (await ws.until("OUTPUT"))[-1]["result"] == "Correct!"


async def test_sealed_approval_runs_the_gated_tool(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        await hello(ws, me, address)
        await ws.send(command(me, address, {"type": "INPUT", "prompt": "save a note: milk"}))
        need = (await ws.until("approval_needed"))[-1]
        await ws.send(
            command(
                me, address, {"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once", "request_id": need["id"]}
            )
        )
        assert "note saved: milk" in (await ws.until("OUTPUT"))[-1]["result"]


async def test_sealed_upload_reaches_the_agent(host, address):
    me = new_keys()
    data = data_url("text/plain", b"the sealed secret is 42")
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        await hello(ws, me, address)
        output = (await sealed_turn(ws, me, address, "read the file", files=[{"name": "secret.txt", "data": data}]))[-1]
        assert "the sealed secret is 42" in output["result"]
        assert "sealed secret" not in json.dumps(ws.outer)


async def test_sealed_cancel_ends_the_turn_as_cancelled(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        await hello(ws, me, address)
        await ws.send(command(me, address, {"type": "INPUT", "prompt": "count to 8 slowly"}))
        await ws.until("tool_result")
        await ws.send(command(me, address, {"type": "INTERRUPT"}))
        terminal = (await ws.until("OUTPUT", "ERROR"))[-1]
        # as on a plain socket (tests/hosting/ws): the turn ends with OUTPUT status cancelled and its session (D29)
        assert terminal["type"] == "OUTPUT" and terminal["status"] == "cancelled", terminal
        assert terminal["session"]["turn"] == 1 and terminal["result"] == ""


async def test_sealed_resume_mid_turn_gets_the_missed_events(host, address):
    me = new_keys()
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        greeting = await hello(ws, me, address)
        sid = greeting[0]["session_id"]
        await ws.send(command(me, address, {"type": "INPUT", "prompt": "count to 6 slowly"}))
        before = await ws.until("tool_result")
    await asyncio.sleep(0.6)
    async with await SealedWS.open(host.ws_url, me, address) as ws:
        await ws.send(signed_connect(me, address, session_id=sid, last_msg_id=before[-1]["id"]))
        connected = await ws.recv()
        assert connected["type"] == "CONNECTED" and connected["status"] == "running"
        after = [f for f in await ws.until("OUTPUT", timeout=30) if f["type"] != "AGENT_PROFILE"]
    events = [f for f in before if "id" in f and f["type"] not in ("CONNECTED",)] + after
    ids = [int(f["id"]) for f in events if str(f.get("id", "")).isdigit()]
    assert ids == sorted(set(ids)) and after[-1]["result"] == "1, 2, 3, 4, 5, 6"


async def test_host_pings_are_sealed(module_hosts):
    quick = module_hosts("--trust", "open", name="sealping", yaml="ws_ping_interval: 0.2\nws_pong_timeout: 30\n")
    address = httpx.get(quick.url + "/info").json()["address"]
    me = new_keys()
    async with await SealedWS.open(quick.ws_url, me, address) as ws:
        outer = await ws.recv_outer(timeout=5)
        assert outer["type"] == "SEALED" and ws.channel.open(outer) == {"type": "PING"}


# -- the frame cap (D24) counts the plain frame, not its sealed form ---------------------------------------------


async def test_the_frame_cap_applies_to_the_plain_frame_inside_the_seal(module_hosts):
    small = module_hosts(*NO_TURN_LIMITS, name="sealcap", yaml="max_request_mb: 0.01\n")  # 10,485 bytes
    address = httpx.get(small.url + "/info").json()["address"]
    me = new_keys()
    async with await SealedWS.open(small.ws_url, me, address) as ws:
        await hello(ws, me, address)
        near = command(me, address, {"type": "INPUT", "prompt": "calculate 1+1 " + "x" * 4_500})
        assert len(json.dumps(near)) < 10_485 < len(json.dumps(ws.channel.seal(near)))  # only its sealed form is over
        ws.channel._sent -= 1
        await ws.send(near)
        assert (await ws.until("OUTPUT", "ERROR"))[-1]["type"] == "OUTPUT"
        await ws.send(command(me, address, {"type": "INPUT", "prompt": "x" * 11_000}))
        error = await ws.recv()
        assert error == {"type": "ERROR", "message": "message too large (max 10485 bytes)"}
        assert ws.outer[-1]["type"] == "SEALED"  # refused inside the seal, which stays open
        assert (await sealed_turn(ws, me, address, "calculate 2*21"))[-1]["type"] == "OUTPUT"
