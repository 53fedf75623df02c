"""Serving limits at daphne's connection layer, installed by every entry point that serves with daphne.

daphne (twisted) accepts every connection, waits as long as a client likes for its headers (its idle timer is
reset by every byte) and reads a whole request body, into a temp file past 100 kB, before the ASGI app sees a
byte of it (HARDENING §1). So what protects the process as a whole has to act here, on the connection:

- **body cap** (PROTOCOL D24, H6): 413 as soon as ``Content-Length`` or a chunked body's running size passes
  ``max_request_mb``; the rest is discarded, never buffered.
- **header deadline** (slowloris, L8): a request's headers must be complete within ``header_timeout`` seconds of
  the connection opening or the previous response; else 408 and close.
- **body deadline** (slow bodies): a body must be complete within ``body_timeout`` seconds of its headers, plus
  one second per ``hosting.serving.asgi_limits.BODY_MIN_RATE`` bytes received; else 408 and close. Running turns are not timed.
- **connections per address**: at most ``max_connections_per_ip`` open connections from one peer address,
  HTTP and WebSocket together (a WebSocket is an upgraded HTTP connection); past it, 429 and close. Peers in
  ``trusted_proxies`` are not counted (the proxy speaks for many clients; ``max_ws_per_ip`` and the turn limits
  still count those clients by ``X-Forwarded-For``).
- **bodies in flight**: the bodies of the requests being served may hold ``bodies_in_flight_mb`` together. A
  body counts from its last byte (until then twisted keeps it on disk past 100 kB, so a client trickling a body
  it declared large holds nothing) until its answer is sent (the parsed JSON, decoded uploads and the turn hold
  memory until then). One that would not fit beside them is refused with 503 + ``Retry-After``: on its
  ``Content-Length`` before it is sent, a chunked one as it grows, or, if others were admitted meanwhile, when
  its last byte arrives. WebSocket messages being received count in the same budget as they arrive (autobahn
  holds a message's frames in memory until the last one) until the message is handed to the app; one that
  would pass it closes its socket with 1013 (try again later).

Each refusal is an HTTP answer with an ``{"error": ...}`` body followed by a lingering close: we stop writing
but read (and drop) what the client still sends for a moment, so its kernel does not meet a reset and discard
the answer before the client has read it.

Counts are per process (with ``--workers N``, per worker). Imported only where daphne serves: it imports
daphne's HTTP protocol (not the reactor, which ``daphne.server`` installs).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from daphne import http_protocol, ws_protocol
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from hosting.serving.asgi_limits import BODY_MIN_RATE, BODY_TOO_SLOW, Budget, body_allowance
from hosting.ws.wslimits import TOO_MANY_FRAMES, FrameBudget, too_many_frames, warn_flood

log = logging.getLogger("connectonion")

LINGER_SECONDS = 2.0
REFUSAL_WAIT_SECONDS = 1.0
WARN_EVERY = 60.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ServingLimits:
    """What ``install`` enforces; every 0 means "no limit"."""

    max_body_bytes: int = 0
    header_timeout: float = 30.0
    body_timeout: float = 30.0
    max_connections_per_ip: int = 512
    bodies_in_flight_bytes: int = 0
    uncounted: tuple[Network, ...] = ()  # trusted proxies
    ws_max_frames_per_second: float = 0.0

    @classmethod
    def of(cls, cfg: Any) -> ServingLimits:
        """The limits of a ``HostConfig``."""
        from hosting.core.config import MB
        from hosting.core.throttle import parse_networks

        return cls(max_body_bytes=cfg.max_request_bytes, header_timeout=cfg.header_timeout,
                   body_timeout=cfg.body_timeout,
                   max_connections_per_ip=cfg.max_connections_per_ip,
                   bodies_in_flight_bytes=int((cfg.bodies_in_flight_mb or 0) * MB),
                   uncounted=parse_networks(cfg.trusted_proxies),
                   ws_max_frames_per_second=cfg.ws_max_frames_per_second)


def install(limits: ServingLimits) -> None:
    """Serve every daphne ``Server`` started after this with ``limits`` (called again: the new limits win).

    daphne's ``Server.run`` builds its HTTP factory from the ``daphne.server`` module's name, which this
    replaces; also lifts the open-file limit to the hard limit (FI12)."""
    from daphne import server as daphne_server

    from hosting.serving import asgi_limits as app_limits
    from hosting.serving.server import raise_fd_limit

    global _limits
    _limits = limits
    BUDGET.cap = limits.bodies_in_flight_bytes
    app_limits.counted_below = True  # this layer counts the bodies in flight: the application's budget stands down
    daphne_server.HTTPFactory = LimitedHTTPFactory
    daphne_server.WebSocketFactory = LimitedWebSocketFactory
    raise_fd_limit()


_limits = ServingLimits()


BUDGET = Budget()  # bodies held on this process's connections, against bodies_in_flight_bytes


def answer_and_close(transport: Any, status: int, reason: bytes, message: str,
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Write a complete JSON answer straight to the socket, then close it lingering (see the module doc)."""
    from twisted.internet import reactor

    if transport is None:
        return
    body = json.dumps({"error": message}).encode()
    extra = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                    b"connection: close\r\n%s\r\n%s" % (status, reason, len(body), extra, body))
    try:
        transport.loseWriteConnection()
    except (AttributeError, NotImplementedError):  # a transport that cannot half-close
        transport.loseConnection()
        return
    reactor.callLater(LINGER_SECONDS, transport.loseConnection)


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
BUSY = (503, b"Service Unavailable", "server busy: too many request bodies in flight, retry later",
        ((b"retry-after", b"1"),))
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
        cap = _limits.max_body_bytes
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
        cap = _limits.max_body_bytes
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
        _warn_once("busy", "refusing request bodies: %d bytes in flight (bodies_in_flight_mb)", BUDGET.used)
        return BUSY

    def _refuse(self, status: int, reason: bytes, message: str, headers: tuple = ()) -> None:
        self._refused = True
        self._release()
        connection = _connection_of(self.channel)
        if connection is not None:
            connection.body_received()  # answered: its body's clock stops
        self.content = _Discard()
        answer_and_close(self.channel.transport if self.channel is not None else None, status, reason, message,
                         headers)


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
        cap = _limits.max_connections_per_ip
        if address is None or not cap or _uncounted(address):
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
            _warn_once("connections", "refusing connections from %s: %d open (max_connections_per_ip)", address,
                       _limits.max_connections_per_ip)
            # Answered once the request's head is in (or after a moment without one): a client that is still
            # writing its request when the answer and the close arrive may report the close, not the 429.
            self._deadline = reactor.callLater(REFUSAL_WAIT_SECONDS, self._answer_refusal)
            return
        if address is not None and _limits.max_connections_per_ip and not _uncounted(address):
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
        answer_and_close(self.transport, 429, b"Too Many Requests", "too many connections from this address",
                         ((b"retry-after", b"1"),))

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
        if _limits.header_timeout and self.wrappedProtocol is self.http:
            self._deadline = reactor.callLater(_limits.header_timeout, self._headers_late)

    def headers_received(self, *, expect_body: bool = False) -> None:
        """Stop the header clock; start the body clock when a body follows (``Content-Length`` > 0, chunked)."""
        from twisted.internet import reactor

        self._cancel()
        if expect_body and _limits.body_timeout:
            self._body_start = reactor.seconds()
            self._deadline = reactor.callLater(_limits.body_timeout, self._body_late)

    def body_progress(self, received: int) -> None:
        """``received`` bytes of the body are in: its deadline moves out by one second per BODY_MIN_RATE bytes."""
        from twisted.internet import reactor

        if self._deadline is None or self._body_start is None or not self._deadline.active():
            return
        allowed = self._body_start + body_allowance(_limits.body_timeout, received) - reactor.seconds()
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
        _warn_once("slow-body", "closing a connection from %s: request body slower than %g s + 1 s per %d bytes "
                   "(body_timeout)", self.counted or "a client", _limits.body_timeout, BODY_MIN_RATE)
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
        _warn_once("slow", "closing a connection from %s: headers not complete within %g s (header_timeout)",
                   self.counted or "a client", _limits.header_timeout)
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


def _uncounted(address: str) -> bool:
    if not _limits.uncounted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _limits.uncounted)


_last_warning: dict[str, float] = {}


def _warn_once(kind: str, message: str, *args: Any) -> None:
    """One line a minute per kind of refusal, whatever the flood."""
    now = time.monotonic()
    if now - _last_warning.get(kind, -WARN_EVERY) >= WARN_EVERY:
        _last_warning[kind] = now
        log.warning(message, *args)


class LimitedWebSocketProtocol(ws_protocol.WebSocketProtocol):
    """daphne's WebSocket protocol, holding the messages it is receiving to the bodies-in-flight budget (autobahn
    keeps a message's frames in memory until its last one is in, so what has arrived counts, as it arrives), and
    each socket to ``ws_max_frames_per_second``.

    The frame budget is counted here, as autobahn hands each message over and before daphne queues it for the
    application: counted in the consumer, a flood costs us anyway (autobahn parses every frame of each 64 KiB
    read and daphne queues each, one read per loop turn while the consumer takes one message per turn, so the
    consumer met frame 201 after hundreds of thousands had been parsed and queued). Past the budget the client
    gets one ERROR and the close 4429, and its later bytes are read and dropped unparsed (the close reply too,
    so autobahn ends the connection after its 1 s close timeout). HARDENING W12.
    """

    _held = 0
    _frames: FrameBudget | None = None
    _flooded = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803 - autobahn's names
        if self._flooded:
            return
        rate = _limits.ws_max_frames_per_second
        if self._frames is None:
            self._frames = FrameBudget(rate)
        if self._frames.take():
            super().onMessage(payload, isBinary)
            return
        self._flooded = True
        client = getattr(self, "client_addr", None)
        warn_flood(client[0] if client else None, rate)
        self.sendMessage(json.dumps(too_many_frames(rate)).encode(), False)
        self.sendClose(code=TOO_MANY_FRAMES)
        self.dataReceived = _discard  # later bytes are read and dropped, never parsed

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)  # may fail the connection: past the message cap
        if not self.failedByMe and length and not BUDGET.fits(length):
            self._busy()  # the frame would not fit: refused on its header, before its payload comes

    def onMessageFrameData(self, payload: bytes) -> None:
        if not self.failedByMe and payload:
            if not BUDGET.take(len(payload)):
                self._busy()
                return
            self._held += len(payload)
        super().onMessageFrameData(payload)

    def _busy(self) -> None:
        _warn_once("busy-ws", "closing a WebSocket: %d bytes of bodies in flight (bodies_in_flight_mb)", BUDGET.used)
        self._release()
        self.failByDrop = False  # a close frame the client can read, not daphne's default TCP drop
        self._fail_connection(TRY_AGAIN_LATER, "server busy: too many request bodies in flight, retry later")

    def onMessageEnd(self) -> None:
        try:
            super().onMessageEnd()  # hands the message to the application
        finally:
            self._release()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._release()
        super().onClose(wasClean, code, reason)

    def _release(self) -> None:
        if self._held:
            BUDGET.give(self._held)
            self._held = 0


TRY_AGAIN_LATER = 1013  # RFC 6455 §7.4 registry: "Try Again Later"


def _discard(data: bytes) -> None:
    return None


class LimitedWebSocketFactory(ws_protocol.WebSocketFactory):
    protocol = LimitedWebSocketProtocol
