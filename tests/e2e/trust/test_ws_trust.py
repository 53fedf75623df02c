"""Signed WebSocket handshakes and v2 signed commands through real host processes (PROTOCOL §2.6, §4)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import websockets
from nacl.signing import SigningKey

from tests.e2e.trust.conftest import address, host_address, wait_for_output
from tests.support.ws import WS
from trust.signing import sign_command, sign_payload

ECHO = "tests.agents:echo_factory"


def connect_frame(key: SigningKey, to: str, *, v2: bool = True, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"to": to, "timestamp": int(time.time())}
    if v2:
        payload["signed_commands"] = 1
    return {"type": "CONNECT", **extra, **sign_payload(key, payload)}


async def v2_socket(host: Any, key: SigningKey, to: str, **extra: Any) -> tuple[WS, dict[str, Any]]:
    sock = await WS.open(host.ws_url)
    await sock.send(connect_frame(key, to, **extra))
    connected = (await sock.until(("CONNECTED", "ERROR")))[-1]
    assert connected["type"] == "CONNECTED", connected
    return sock, connected


@pytest.fixture(scope="module")
def careful(module_hosts):
    """One host at the default level for the tests that only connect to it (each with keys of its own)."""
    host = module_hosts(ECHO)
    return host, host_address(host)


async def test_signed_init_with_0x_signature_and_float_timestamp(careful):
    host, to = careful
    key = SigningKey.generate()
    body = sign_payload(key, {"to": to, "timestamp": time.time()})
    body["signature"] = "0x" + body["signature"]
    sock = await WS.open(host.ws_url)
    await sock.send({"type": "INIT", **body})
    frame = (await sock.until(("CONNECTED", "ERROR")))[-1]
    assert frame["type"] == "CONNECTED" and frame["status"] == "new"
    await sock.close()


async def test_v2_commands_are_checked_one_by_one(careful):
    host, to = careful
    a, b = SigningKey.generate(), SigningKey.generate()

    async def refused(command: dict[str, Any]) -> str:
        sock, _ = await v2_socket(host, a, to)
        await sock.send(command)
        frame = (await sock.until(("ERROR", "OUTPUT")))[-1]
        await sock.close()
        return frame.get("message", frame)

    assert await refused({"type": "INPUT", "prompt": "plain"}) == "unauthorized: signed command required"
    assert await refused(sign_command(b, {"type": "INPUT", "prompt": "x"}, to=to)) == (
        "unauthorized: command signer does not own this connection"
    )
    mismatch = sign_command(a, {"type": "INTERRUPT"}, to=to)
    mismatch["type"] = "INPUT"
    assert await refused(mismatch) == "unauthorized: signed command type mismatch"
    no_nonce = sign_payload(a, {"type": "INPUT", "prompt": "x", "to": to, "timestamp": int(time.time())})
    assert await refused({"type": "INPUT", **no_nonce}) == "unauthorized: signed command nonce required"

    sock, _connected = await v2_socket(host, a, to)
    command = sign_command(a, {"type": "INPUT", "prompt": "from the payload"}, to=to)
    command["prompt"] = "top-level copy"
    await sock.send(command)
    output = (await sock.until(("OUTPUT", "ERROR")))[-1]
    assert output["type"] == "OUTPUT" and output["result"] == "echo: from the payload"
    await sock.send(command)
    again = (await sock.until(("ERROR", "OUTPUT")))[-1]
    assert again["message"] == "unauthorized: signed command already used"
    await sock.close()
    out = wait_for_output(host, "reason=unauthorized: signed command already used")
    assert f"identity={address(a)}" in out


async def test_byte_identical_v2_connects_both_succeed(careful):
    host, to = careful
    key = SigningKey.generate()
    frame = connect_frame(key, to)
    ids = []
    for _ in range(2):
        sock = await WS.open(host.ws_url)
        await sock.send(frame)
        reply = (await sock.until(("CONNECTED", "ERROR")))[-1]
        assert reply["type"] == "CONNECTED", reply
        ids.append(reply["session_id"])
        await sock.close()
    assert ids[0] != ids[1]


async def test_another_signers_session_is_neither_resumed_nor_attached(careful):
    host, to = careful
    a, b = SigningKey.generate(), SigningKey.generate()
    sock, connected = await v2_socket(host, a, to)
    sid = connected["session_id"]
    await sock.send(sign_command(a, {"type": "INPUT", "prompt": "secret of A"}, to=to))
    output = (await sock.until(("OUTPUT", "ERROR")))[-1]
    assert output["type"] == "OUTPUT"
    await sock.close()

    thief, connected = await v2_socket(host, b, to, session_id=sid)
    assert connected["session_id"] != sid
    assert "secret of A" not in json.dumps(connected)
    later: list[dict[str, Any]] = []
    with pytest.raises(TimeoutError):
        while True:  # whatever else arrives (profile, status), none of it is A's conversation
            later.append(await thief.recv(timeout=1))
    assert "secret of A" not in json.dumps(later)
    await thief.close()

    attach = await WS.open(host.ws_url)
    payload = {"to": to, "timestamp": int(time.time()), "session_id": sid}
    await attach.send({"type": "ATTACH", "session_id": sid, "last_msg_id": "0", **sign_payload(b, payload)})
    reply = (await attach.until(("CONNECTED", "ERROR")))[-1]
    assert reply["status"] == "expired" and reply["session_id"] != sid
    assert "secret of A" not in json.dumps(reply)
    await attach.close()


async def test_strict_and_blacklist_handshakes(start_host):
    bad = SigningKey.generate()
    host = start_host(ECHO, "--trust", "strict", "--blacklist", address(bad))
    to = host_address(host)
    sock = await WS.open(host.ws_url)
    await sock.send({"type": "CONNECT"})
    frame = (await sock.until(("ERROR", "CONNECTED")))[-1]
    assert frame["type"] == "ERROR" and frame["message"] == "unauthorized: signed request required"
    with pytest.raises(websockets.ConnectionClosed):  # ERROR, then the host closes the socket
        await sock.recv(timeout=10)

    sock = await WS.open(host.ws_url)
    await sock.send(connect_frame(bad, to))
    frame = (await sock.until(("ERROR", "CONNECTED")))[-1]
    assert frame["message"] == "forbidden: blacklisted"
    await sock.close()

    sock, _ = await v2_socket(host, SigningKey.generate(), to)  # strict admits any valid signer
    await sock.close()
    out = wait_for_output(host, "reason=forbidden: blacklisted")
    assert "level=strict" in out and "transport=ws" in out


async def test_a_signed_input_as_the_first_frame_is_its_own_handshake_at_strict(start_host):
    """PROTOCOL §4.5: the INPUT's signature authenticates the socket; it is checked (and its nonce spent) once."""
    host = start_host(ECHO, "--trust", "strict")
    key = SigningKey.generate()
    payload = {"prompt": "hi", "to": host_address(host), "timestamp": int(time.time()), "nonce": "first-frame-1"}
    sock = await WS.open(host.ws_url)
    await sock.send({"type": "INPUT", **sign_payload(key, payload)})
    seen = await sock.until(("OUTPUT", "ERROR"))
    terminal = seen[-1]
    assert terminal["type"] == "OUTPUT", seen
    assert seen[0]["type"] == "CONNECTED"
    await sock.send({"type": "INPUT", **sign_payload(key, payload)})  # the same capture again: refused
    terminal = (await sock.until(("OUTPUT", "ERROR")))[-1]
    assert terminal["type"] == "ERROR" and "already used" in terminal["message"]
    await sock.close()
