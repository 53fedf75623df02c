"""Sealed-socket helpers (PROTOCOL §4.8): a raw sealed client built on the *released* client's own sealing
code (``connectonion.network.sealed``), so what these tests prove is that our host interoperates with it byte
for byte, plus signing helpers for the CONNECT and v2 commands that travel inside the seal."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets
from connectonion.network import sealed as released
from nacl.signing import SigningKey

from trust.identity import AgentIdentity
from trust.signing import sign_command, sign_payload

Frame = dict[str, Any]


def new_keys() -> AgentIdentity:
    return AgentIdentity.from_signing_key(SigningKey.generate())


def released_keys(identity: AgentIdentity) -> dict[str, Any]:
    """The key dict the released client's functions take."""
    return {"address": identity.address, "signing_key": identity.signing_key}


def signed_connect(identity: AgentIdentity, host: str, **top: Any) -> Frame:
    """The released client's CONNECT: ``{to, timestamp, signed_commands: 1}`` signed, no nonce."""
    now = int(time.time())
    payload = {"to": host, "timestamp": now, "signed_commands": 1}
    return {"type": "CONNECT", "timestamp": now, **top, **sign_payload(identity.signing_key, payload)}


def command(identity: AgentIdentity, host: str, frame: Frame) -> Frame:
    return sign_command(identity.signing_key, frame, to=host)


class SealedWS:
    """One socket sealed with the released client's code. ``raw`` is the plain websockets connection;
    ``send``/``recv`` carry sealed frames (relay PING/ERROR without ``c`` pass through, as the released
    client's ``SealedSocket`` does). Host PINGs are answered and hidden."""

    def __init__(self, sock: Any, channel: Any, ok: Frame) -> None:
        self.raw = sock
        self.channel = channel
        self.ok = ok
        self.outer: list[Frame] = []  # every frame as it arrived, before opening

    @classmethod
    async def open(cls, url: str, identity: AgentIdentity, host: str, *, first: Frame | None = None) -> SealedWS:
        sock = await websockets.connect(url, max_size=2**28, ping_interval=None)
        hello, ephemeral = released.client_hello(released_keys(identity), host)
        await sock.send(json.dumps({**hello, **(first or {})}))
        reply = json.loads(await asyncio.wait_for(sock.recv(), 10))
        channel = released.client_finish(reply, hello, ephemeral)
        return cls(sock, channel, reply)

    async def send(self, frame: Frame) -> None:
        await self.raw.send(json.dumps(self.channel.seal(frame)))

    async def send_raw(self, frame: Frame | str) -> None:
        await self.raw.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv_outer(self, timeout: float = 10) -> Frame:
        frame = json.loads(await asyncio.wait_for(self.raw.recv(), timeout))
        self.outer.append(frame)
        return frame

    async def recv(self, timeout: float = 15) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            outer = await self.recv_outer(max(0.01, deadline - time.monotonic()))
            if outer.get("type") in ("PING", "ERROR") and "c" not in outer:
                if outer["type"] == "ERROR":
                    return outer
                continue
            frame = self.channel.open(outer)
            if frame.get("type") == "PING":
                await self.send({"type": "PONG"})
                continue
            return frame

    async def until(self, *types: str, timeout: float = 20) -> list[Frame]:
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = await self.recv(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"no {types} within {timeout} s; got {[f.get('type') for f in frames]}") from None
            frames.append(frame)
            if frame.get("type") in types:
                return frames

    async def close(self) -> None:
        await self.raw.close()

    async def __aenter__(self) -> SealedWS:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
