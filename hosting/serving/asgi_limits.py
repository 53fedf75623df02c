"""ASGI-level request caps, enforced before Django reads a byte of the body (PROTOCOL D24, HARDENING H6/H9),
the body deadline (a slow body is cut with 408) and the budget of bodies in flight (``bodies_in_flight_mb``,
503 + ``Retry-After``).

Under daphne the same caps also act on the connection, as the body arrives (``hosting.serving.limits``: daphne reads a
whole body before the application sees it); these hold under any ASGI server (uvicorn, gunicorn's workers,
``create_app``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

Scope = dict[str, Any]

# Like Apache's mod_reqtimeout ``body=30,MinRate=500``: a body may take ``body_timeout`` seconds, plus one more
# for every BODY_MIN_RATE bytes that arrive. A real upload, however large, keeps extending its deadline; a client
# sending a byte every few seconds does not, and is answered 408 (HARDENING L8, slow bodies).
BODY_MIN_RATE = 500
BODY_TOO_SLOW = "request body took too long"
BUSY = (503, "server busy: too many request bodies in flight, retry later")


class Budget:
    """Bytes of request bodies being served in this process, against ``cap`` (0 = no budget)."""

    def __init__(self, cap: int = 0) -> None:
        self.cap = cap
        self.used = 0

    def fits(self, size: int) -> bool:
        return not self.cap or self.used + size <= self.cap

    def take(self, size: int) -> bool:
        if not self.fits(size):
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)


# The application's own budget, for servers that hand it bodies as they arrive (uvicorn): a body counts from its
# last byte (until then Django spools it to disk past 2.5 MB) until the application has answered it. Under daphne
# ``hosting.serving.limits`` counts the same bodies on the connection, and switches this one off (``counted_below``).
BODIES = Budget()
counted_below = False


def body_allowance(timeout: float, received: int) -> float:
    """Seconds a body may have taken, from its first expected byte, once ``received`` bytes are in."""
    return timeout + received / BODY_MIN_RATE


class BodyLimitMiddleware:
    """413 from ``Content-Length`` at once, or as soon as a streamed body passes the cap; 408 for a body
    slower than ``body_allowance``; 415 for compressed request bodies (we never inflate)."""

    def __init__(self, app: Any, *, max_bytes: int, body_timeout: float = 0.0, bodies_in_flight: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        BODIES.cap = bodies_in_flight

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"", b"identity"):
            await _reply(send, 415, "Unsupported media type")
            return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _reply(send, 400, "bad request")
                return
            if declared > self.max_bytes:
                await _reply(send, 413, "request body too large")
                return
            if not counted_below and not BODIES.fits(declared):  # refused before it is sent
                await _reply(send, *BUSY)
                return
        body = _Body(receive, self.max_bytes, self.body_timeout, chunked=length is None)
        started = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, body.receive, guarded_send)
        finally:
            BODIES.give(body.held)
        if body.refusal is not None and not started:
            await _reply(send, *body.refusal)


class _Body:
    """The request's ``receive``, counting the body against the cap and its deadline. Once the body is complete
    ``receive`` is passed straight through (Django then waits on it for the client's disconnect)."""

    def __init__(self, receive: Any, max_bytes: int, timeout: float, *, chunked: bool = False) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.chunked = chunked
        self.received = 0
        self.held = 0  # bytes of BODIES this body holds
        self.complete = False
        self.refusal: tuple[int, str] | None = None
        self._start: float | None = None

    async def receive(self) -> dict[str, Any]:
        if self.refusal is not None:
            return {"type": "http.disconnect"}
        if self.complete:
            return await self._receive()
        message = await self._next()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.received > self.max_bytes:
                self.refusal = (413, "request body too large")
                return {"type": "http.disconnect"}
            if not counted_below and not self._admitted():
                self.refusal = BUSY
                return {"type": "http.disconnect"}
        return message

    def _admitted(self) -> bool:
        """Chunked: checked as it grows; complete: counted until the answer (or refused if it does not fit)."""
        if not self.complete:
            return not self.chunked or BODIES.fits(self.received)
        if not self.received or BODIES.take(self.received):
            self.held = self.received
            return True
        return False

    async def _next(self) -> dict[str, Any]:
        if not self.timeout:
            return await self._receive()
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        left = self._start + body_allowance(self.timeout, self.received) - loop.time()
        try:
            return await asyncio.wait_for(self._receive(), max(left, 0.0))
        except TimeoutError:
            self.refusal = (408, BODY_TOO_SLOW)
            return {"type": "http.disconnect"}


async def _reply(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    extra = [(b"retry-after", b"1")] if status == 503 else []
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
