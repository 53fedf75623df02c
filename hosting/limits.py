"""ASGI-level request caps, enforced before Django reads a byte of the body (PROTOCOL D24, HARDENING H6/H9)."""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]


class BodyLimitMiddleware:
    """413 from ``Content-Length`` at once, or as soon as a streamed body passes the cap;
    415 for compressed request bodies (we never inflate)."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
        received = 0
        too_large = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if too_large and not started:
            await _reply(send, 413, "request body too large")


async def _reply(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# --- the same cap at daphne's HTTP layer --------------------------------------------------------------------

LINGER_SECONDS = 2.0


class _Discard:
    """Where the body of a refused request goes: nowhere (no memory, no temp file)."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


def install_daphne_body_cap(max_bytes: int) -> None:
    """Make daphne refuse an oversize body while it arrives, not after buffering it.

    daphne (twisted) reads a whole request body, into a temp file past 100 kB, before it calls the ASGI app,
    so ``BodyLimitMiddleware`` alone answers 413 only after a declared 1 GiB has been written to disk. Here
    the request object answers 413 and closes the connection as soon as ``Content-Length`` (or, for a chunked
    body, the bytes received) passes the cap, and discards whatever still arrives. Installed by ``runhost``
    (it serves with daphne's ``Server``, whose HTTP factory this swaps for one making these requests).
    """
    from daphne import http_protocol
    from daphne import server as daphne_server

    class CappedWebRequest(http_protocol.WebRequest):
        _received = 0
        _refused = False

        def gotLength(self, length: int | None) -> None:
            if length is not None and length > max_bytes:
                self._refuse()
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:
            if self._refused:
                return
            self._received += len(data)
            if self._received > max_bytes:
                self._refuse()
                return
            super().handleContentChunk(data)

        def _refuse(self) -> None:
            self._refused = True
            self.content = _Discard()
            body = json.dumps({"error": "request body too large"}).encode()
            transport = self.channel.transport if self.channel is not None else None
            if transport is not None:
                transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\ncontent-type: application/json\r\n"
                                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
                # A lingering close: end our side after the answer but keep reading (and dropping) what the
                # client still sends for a moment, so its kernel does not meet a reset and discard the 413
                # before the client has read it. Then close for good.
                from twisted.internet import reactor

                transport.loseWriteConnection()
                reactor.callLater(LINGER_SECONDS, transport.loseConnection)

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            if not self._refused:  # a refused request has had its answer; it never reaches the app
                super().requestReceived(command, path, version)

    class CappedHTTPFactory(http_protocol.HTTPFactory):
        def buildProtocol(self, addr: Any) -> Any:
            protocol = super().buildProtocol(addr)
            protocol.requestFactory = CappedWebRequest
            return protocol

    daphne_server.HTTPFactory = CappedHTTPFactory
