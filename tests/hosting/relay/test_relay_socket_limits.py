"""Our relay holds its sockets to the limits of /ws (issue 15.4/15.13 at the relay's door), served as
``runrelay`` serves it (daphne): a socket that never reads is closed 4413 once the relay owes it more than
``--send-buffer-mb`` (its memory stays bounded, its agent is told ``close``); a client sending more than
``--max-frames-per-second`` gets the ERROR of /ws and close 4429; a frame over ``--max-message-bytes`` gets
``ERROR "message too large (max N bytes)"`` as on /ws, and the socket goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct

import httpx
import pytest
import websockets

from .conftest import announced, client_socket, new_identity, recv_json, send_json


def _masked(payload: bytes) -> bytes:
    mask = b"abcd"
    head = (
        bytes([0x81, 0x80 | len(payload)])
        if len(payload) < 126
        else bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(payload))
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _non_reader(relay, first: dict) -> socket.socket:
    """A client that opens /ws/input, sends ``first`` and then never reads a byte."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"GET /ws/input HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)  # the upgrade answer only
    assert b" 101 " in answer
    sock.sendall(_masked(json.dumps(first).encode()))
    return sock


async def test_a_client_that_never_reads_is_closed_4413_and_its_agent_told(relay_process):
    relay = relay_process("--send-buffer-mb", "2")
    identity = new_identity()
    agent = await announced(relay, identity)
    reader = await asyncio.to_thread(_non_reader, relay, {"type": "CONNECT", "to": identity.address})
    try:
        conn_id = (await recv_json(agent))["conn_id"]
        blob = "x" * (1024 * 1024)
        closed = None
        for _ in range(200):  # far more than any kernel buffers on loopback; the relay closes it before
            await send_json(agent, {"type": "OUTPUT", "conn_id": conn_id, "session_id": "s", "result": blob})
            with contextlib.suppress(TimeoutError):
                closed = await recv_json(agent, timeout=0.05)
            if closed is not None:
                break
        assert closed == {"type": "close", "conn_id": conn_id, "session_id": closed["session_id"]}
        async with httpx.AsyncClient() as http:
            assert (await http.get(relay.http + "/health")).status_code == 200
        async with client_socket(relay, {"type": "CONNECT", "to": identity.address}) as other:  # others go on
            forwarded = await recv_json(agent)
            await send_json(
                agent, {"type": "OUTPUT", "conn_id": forwarded["conn_id"], "session_id": "s", "result": "ok"}
            )
            assert (await recv_json(other))["result"] == "ok"
    finally:
        reader.close()
        await agent.close()


async def test_a_flooding_client_gets_the_error_of_ws_and_close_4429(relay_process):
    relay = relay_process("--max-frames-per-second", "50")
    identity = new_identity()
    agent = await announced(relay, identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address}) as client:
        conn_id = (await recv_json(agent))["conn_id"]
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(1000):
                await client.send('{"type": "PONG"}')
        frames = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frames.append(await recv_json(client, timeout=10))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        assert frames[-1]["code"] == "TOO_MANY_FRAMES"
        assert frames[-1]["message"] == "too many messages (max 50 a second)"
    forwarded = []
    while (frame := await recv_json(agent, timeout=10))["type"] != "close":
        forwarded.append(frame)
    assert frame["conn_id"] == conn_id and len(forwarded) < 1000  # the rest never reached the agent
    await agent.close()


async def test_a_frame_over_the_cap_gets_the_error_of_ws_and_the_socket_goes_on(relay_process):
    relay = relay_process("--max-message-bytes", str(1024 * 1024))
    identity = new_identity()
    agent = await announced(relay, identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address}) as client:
        await recv_json(agent)
        await send_json(client, {"type": "INPUT", "prompt": "x" * (1024 * 1024)})
        refused = await recv_json(client, timeout=10)
        assert (refused["type"], refused["message"]) == ("ERROR", "message too large (max 1048576 bytes)")
        await send_json(client, {"type": "INPUT", "prompt": "small"})
        assert (await recv_json(agent))["prompt"] == "small"
    await agent.close()
