"""WebSocket clients for the tests: a JSON-frame client over ``websockets`` (a real server), the same reading
for Channels' ``WebsocketCommunicator`` (in process), and one whole turn as a single call.

Host ``PING`` frames are answered with ``PONG`` and hidden everywhere, so a test reads only what it means.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import websockets

Frame = dict[str, Any]
Stop = Callable[[Frame], bool] | str | tuple[str, ...]
TERMINAL_FRAMES = ("OUTPUT", "ERROR")


def matcher(stop: Stop) -> Callable[[Frame], bool]:
    """``stop`` as a predicate: a predicate stays one, a type name or a tuple of them matches ``type``."""
    if callable(stop):
        return stop
    names = (stop,) if isinstance(stop, str) else tuple(stop)
    return lambda frame: frame.get("type") in names


class WS:
    """One socket speaking JSON frames. ``PING`` frames are answered with ``PONG`` (unless ``pong=False``) and
    hidden; ``pings`` counts them and ``seen`` keeps every other frame received."""

    def __init__(self, sock: Any, *, pong: bool = True) -> None:
        self.sock = sock
        self.pong = pong
        self.pings = 0
        self.seen: list[Frame] = []

    @classmethod
    async def open(cls, url: str, *, pong: bool = True, **connect: Any) -> WS:
        connect = {"max_size": 2**24, "ping_interval": None, **connect}
        return cls(await websockets.connect(url, **connect), pong=pong)

    async def send(self, frame: Frame | str | bytes) -> None:
        await self.sock.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout: float = 10) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no frame within {timeout} s; seen: {self.seen[-5:]}")
            frame = json.loads(await asyncio.wait_for(self.sock.recv(), left))
            if frame.get("type") == "PING":
                self.pings += 1
                if self.pong:
                    await self.send({"type": "PONG"})
                continue
            self.seen.append(frame)
            return frame

    async def until(self, stop: Stop, timeout: float = 15) -> list[Frame]:
        """Frames up to and including the first that matches ``stop`` (a predicate or type names)."""
        done = matcher(stop)
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            frames.append(frame)
            if done(frame):
                return frames

    async def nothing_for(self, seconds: float) -> list[Frame]:
        """Every non-PING frame that arrives within ``seconds`` (normally none)."""
        got: list[Frame] = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                got.append(await self.recv(left))
            except TimeoutError:
                break
        return got

    async def close(self) -> None:
        await self.sock.close()

    async def __aenter__(self) -> WS:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def ws_turn(ws_url: str, prompt: str, *, timeout: float = 30.0, **extra: Any) -> Frame:
    """One WebSocket turn on a fresh socket: INPUT, then frames until OUTPUT or ERROR, which is returned."""
    async with await WS.open(ws_url, open_timeout=timeout) as ws:
        await ws.send({"type": "INPUT", "prompt": prompt, **extra})
        return (await ws.until(TERMINAL_FRAMES, timeout))[-1]


def ws_turn_sync(ws_url: str, prompt: str, *, timeout: float = 30.0, **extra: Any) -> Frame:
    """:func:`ws_turn` for a synchronous test (it runs its own event loop)."""
    return asyncio.run(ws_turn(ws_url, prompt, timeout=timeout, **extra))


async def frames_until(comm: Any, stop: Stop, timeout: float = 20) -> list[Frame]:
    """For a Channels ``WebsocketCommunicator``: frames up to the first that matches ``stop``, PINGs skipped."""
    done = matcher(stop)
    got: list[Frame] = []
    while True:
        frame = json.loads(await comm.receive_from(timeout=timeout))
        if frame.get("type") == "PING":
            continue
        got.append(frame)
        if done(frame):
            return got


def events_only(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.get("type") not in ("CONNECTED", "AGENT_PROFILE", "OUTPUT", "ERROR")]
