"""WebSocket test helpers: module-scoped real hosts and a small JSON-frame client over ``websockets``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import websockets

Frame = dict[str, Any]




class WS:
    """One socket speaking JSON frames. ``PING`` frames are answered with ``PONG`` and hidden unless asked for."""

    def __init__(self, sock: Any, *, pong: bool = True) -> None:
        self.sock = sock
        self.pong = pong
        self.pings = 0
        self.seen: list[Frame] = []

    @classmethod
    async def open(cls, url: str, *, pong: bool = True) -> WS:
        return cls(await websockets.connect(url, max_size=2**24, ping_interval=None), pong=pong)

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

    async def until(self, stop: Callable[[Frame], bool] | str | tuple[str, ...], timeout: float = 15) -> list[Frame]:
        """Frames up to and including the first that matches ``stop`` (a predicate or type names)."""
        if not callable(stop):
            names = (stop,) if isinstance(stop, str) else stop
            stop = lambda f: f.get("type") in names  # noqa: E731
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            frames.append(frame)
            if stop(frame):
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


def events_only(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.get("type") not in ("CONNECTED", "AGENT_PROFILE", "OUTPUT", "ERROR")]
