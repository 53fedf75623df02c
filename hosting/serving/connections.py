"""daphne's HTTP connections held to the serving limits (``hosting.serving.limits``, which says why each exists):
connections per address, the header and body deadlines (``LimitedConnection``), the body cap and the bodies in
flight (``LimitedWebRequest``). Every refusal is an ``{"error": ...}`` answer and a lingering close.

Imported only where daphne serves: it imports daphne's HTTP protocol (not the reactor, which ``daphne.server``
installs).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from daphne import http_protocol
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from hosting.serving.asgi_limits import BODY_MIN_RATE, BODY_TOO_SLOW, body_allowance
from hosting.serving.limits import BUDGET, active, answer_and_close, uncounted, warn_once

log = logging.getLogger("connectonion")

REFUSAL_WAIT_SECONDS = 1.0


class _Discard:
    """Where the body of a refused request goes: nowhere (no memory, no temp file)."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


TOO_LARGE = (413, b"Request Entity Too Large", "request body too large")
BUSY = (
    503,
    b"Service Unavailable",
    "server busy: too many request bodies in flight, retry later",
    ((b"retry-after", b"1"),),
)
INTERNAL_ERROR = (500, b"Internal Server Error", "internal error")


class LimitedWebRequest(http_protocol.WebRequest):
    """daphne's request, held to the body cap and the bodies-in-flight budget; tells its connection when its
    headers are in (the deadline stops) and when its answer is out (the deadline starts for the next one)."""

    _received = 0
    _held = 0
    _refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # twisted parses form and multipart bodies into ``args`` itself (all in memory) and answers a malformed
        # multipart with a bare 400 and no body; the app never reads ``args``, and answers every body that is
        # not JSON with 415 (HARDENING H8, issue 15.9).
        self._parsePOSTFormSubmission = False

    # twisted calls these from its parser, and daphne sends twisted's log nowhere: an exception raised here would
    # drop the connection with no answer and no traceback. Each is guarded: logged, and answered 500.
    def gotLength(self, length: int | None) -> None:
        try:
            refusal = self._admit_headers(length)
        except Exception:
            log.exception("serving limits failed on a request's headers")
            refusal = INTERNAL_ERROR
        if refusal is not None:
            self._refuse(*refusal)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        try:
            refusal = self._admit_chunk(len(data))
        except Exception:
            log.exception("serving limits failed on a request's body")
            refusal = INTERNAL_ERROR
        if refusal is not None:
            self._refuse(*refusal)
            return
        super().handleContentChunk(data)

    def _admit_headers(self, length: int | None) -> tuple | None:
        connection = _connection_of(self.channel)
        if connection is not None:
            connection.headers_received(expect_body=length != 0)
        cap = active().max_body_bytes
        if length is not None and cap and length > cap:
            return TOO_LARGE
        if length and not BUDGET.fits(length):
            return self._busy()  # would not fit beside the bodies being served now: refused before it is sent
        return None

    def _admit_chunk(self, size: int) -> tuple | None:
        self._received += size
        connection = _connection_of(self.channel)
        if connection is not None:
            connection.body_progress(self._received)
        cap = active().max_body_bytes
        if cap and self._received > cap:
            return TOO_LARGE
        if self.requestHeaders.getRawHeaders(b"content-length") is None and not BUDGET.fits(self._received):
            return self._busy()  # chunked: checked as it grows
        return None

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:  # a refused request has had its answer; it never reaches the app
            return
        connection = _connection_of(self.channel)
        if connection is not None:
            connection.body_received()
        # Counted from here, not from the headers: until the last byte twisted keeps the body on disk (past
        # 100 kB), and a client trickling a body it declared large must not hold the budget for everyone.
        try:
            held = self._hold(self._received) if self._received else True
        except Exception:
            log.exception("serving limits failed on a request's body")
            self._refuse(*INTERNAL_ERROR)
            return
        if not held:
            self._refuse(*self._busy())
            return
        super().requestReceived(command, path, version)

    def finish(self) -> None:
        try:
            connection = _connection_of(self.channel)
            if connection is not None and getattr(self.channel, "persistent", False):
                connection.await_headers()  # before twisted replays a pipelined request's bytes
            self._release()
        except Exception:  # the answer is written: never keep it from finishing
            log.exception("serving limits failed after a request")
        super().finish()

    def connectionLost(self, reason: Any) -> None:
        self._release()
        super().connectionLost(reason)

    def _hold(self, size: int) -> bool:
        if not BUDGET.take(size):
            return False
        self._held += size
        return True

    def _release(self) -> None:
        if self._held:
            BUDGET.give(self._held)
            self._held = 0

    def _busy(self) -> tuple:
        warn_once("busy", "refusing request bodies: %d bytes in flight (bodies_in_flight_mb)", BUDGET.used)
        return BUSY

    def _refuse(self, status: int, reason: bytes, message: str, headers: tuple = ()) -> None:
        self._refused = True
        self._release()
        connection = _connection_of(self.channel)
        if connection is not None:
            connection.body_received()  # answered: its body's clock stops
        self.content = _Discard()
        answer_and_close(self.channel.transport if self.channel is not None else None, status, reason, message, headers)


@implementer(IProtocolNegotiationFactory)
class LimitedHTTPFactory(WrappingFactory):
    """daphne's HTTP factory behind a wrapper that counts connections per address and times headers.

    daphne hands an upgraded connection's transport to its WebSocket protocol and, for a ``ProtocolWrapper``
    transport (as TLS is), swaps the wrapped protocol: this wrapper then carries the WebSocket, and its count
    lasts until that socket closes."""

    def __init__(self, server: Any) -> None:
        inner = http_protocol.HTTPFactory(server)
        super().__init__(inner)
        self.server = server
        self.open: Counter[str] = Counter()

    def buildProtocol(self, addr: Any) -> Any:
        channel = self.wrappedFactory.buildProtocol(addr)
        if channel is None:
            return None
        channel.requestFactory = LimitedWebRequest
        return LimitedConnection(self, channel)

    def admit(self, address: str | None) -> bool:
        cap = active().max_connections_per_ip
        if address is None or not cap or uncounted(address):
            return True
        if self.open[address] >= cap:
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def acceptableProtocols(self) -> list[bytes]:  # ALPN under TLS: what daphne's factory offers
        return self.wrappedFactory.acceptableProtocols()


class LimitedConnection(ProtocolWrapper):
    """One accepted connection: counted against its address, refused past the cap, timed until headers."""

    counted: str | None = None
    refused = False
    _deadline: Any = None
    _body_start: float | None = None
    _heard = False
    _head = b""

    def __init__(self, factory: LimitedHTTPFactory, channel: Any) -> None:
        super().__init__(factory, channel)
        self.http = channel  # daphne swaps ``wrappedProtocol`` for its WebSocket protocol on an upgrade

    def makeConnection(self, transport: Any) -> None:
        address = getattr(transport.getPeer(), "host", None)
        if not self.factory.admit(address):
            from twisted.internet import reactor

            self.refused = True
            Protocol.makeConnection(self, transport)
            warn_once(
                "connections",
                "refusing connections from %s: %d open (max_connections_per_ip)",
                address,
                active().max_connections_per_ip,
            )
            # Answered once the request's head is in (or after a moment without one): a client that is still
            # writing its request when the answer and the close arrive may report the close, not the 429.
            self._deadline = reactor.callLater(REFUSAL_WAIT_SECONDS, self._answer_refusal)
            return
        if address is not None and active().max_connections_per_ip and not uncounted(address):
            self.counted = address
        super().makeConnection(transport)
        self.await_headers()

    def dataReceived(self, data: bytes) -> None:
        if self.refused:  # read and dropped; the answer goes out once the head is complete
            if self._deadline is not None:
                joined = self._head + data
                if b"\r\n\r\n" in joined:
                    self._answer_refusal()
                else:
                    self._head = joined[-3:]
            return
        self._heard = True
        super().dataReceived(data)

    def _answer_refusal(self) -> None:
        self._cancel()
        answer_and_close(
            self.transport,
            429,
            b"Too Many Requests",
            "too many connections from this address",
            ((b"retry-after", b"1"),),
        )

    def connectionLost(self, reason: Any) -> None:
        self._cancel()
        if self.counted is not None:
            self.factory.release(self.counted)
            self.counted = None
        if self.refused:
            return
        super().connectionLost(reason)

    # -- the header deadline ------------------------------------------------------------------------------
    def await_headers(self) -> None:
        """Start the clock: a request's headers must be complete within ``header_timeout``."""
        from twisted.internet import reactor

        self._cancel()
        self._heard = False
        if active().header_timeout and self.wrappedProtocol is self.http:
            self._deadline = reactor.callLater(active().header_timeout, self._headers_late)

    def headers_received(self, *, expect_body: bool = False) -> None:
        """Stop the header clock; start the body clock when a body follows (``Content-Length`` > 0, chunked)."""
        from twisted.internet import reactor

        self._cancel()
        if expect_body and active().body_timeout:
            self._body_start = reactor.seconds()
            self._deadline = reactor.callLater(active().body_timeout, self._body_late)

    def body_progress(self, received: int) -> None:
        """``received`` bytes of the body are in: its deadline moves out by one second per BODY_MIN_RATE bytes."""
        from twisted.internet import reactor

        if self._deadline is None or self._body_start is None or not self._deadline.active():
            return
        allowed = self._body_start + body_allowance(active().body_timeout, received) - reactor.seconds()
        self._deadline.reset(max(allowed, 0.0))

    def body_received(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self._body_start = None

    def _body_late(self) -> None:
        self._deadline = None
        self._body_start = None
        if self.transport is None or self.disconnecting or self.wrappedProtocol is not self.http:
            return
        warn_once(
            "slow-body",
            "closing a connection from %s: request body slower than %g s + 1 s per %d bytes (body_timeout)",
            self.counted or "a client",
            active().body_timeout,
            BODY_MIN_RATE,
        )
        self._time_out(BODY_TOO_SLOW)

    def _time_out(self, message: str) -> None:
        """408 with ``message`` and close; the request being read is over (nothing more is parsed)."""
        channel = self.wrappedProtocol
        self.wrappedProtocol = _Ignore()
        answer_and_close(self.transport, 408, b"Request Timeout", message)
        channel.connectionLost(_timed_out(message))

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport is None or self.disconnecting or self.wrappedProtocol is not self.http:
            return
        if not self._heard:
            self.transport.loseConnection()  # an idle connection (kept alive, or never used): close quietly
            return
        warn_once(
            "slow",
            "closing a connection from %s: headers not complete within %g s (header_timeout)",
            self.counted or "a client",
            active().header_timeout,
        )
        self._time_out("request headers took too long")


class _Ignore(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


def _timed_out(message: str) -> Any:
    from twisted.internet.error import TimeoutError as TwistedTimeout
    from twisted.python.failure import Failure

    return Failure(TwistedTimeout(message))


def _connection_of(channel: Any) -> LimitedConnection | None:
    transport = getattr(channel, "transport", None)
    return transport if isinstance(transport, LimitedConnection) else None
