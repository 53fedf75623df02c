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

Counts are per process (with ``--workers N``, per worker). Here: the limits, the shared budget and the refusal;
daphne's HTTP connections are held to them in ``hosting.serving.connections``, its WebSockets in
``hosting.serving.ws_messages``. Those import daphne's protocols (not the reactor, which ``daphne.server``
installs), so only ``install`` imports them, where daphne serves.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from hosting.serving.asgi_limits import Budget

log = logging.getLogger("connectonion")

LINGER_SECONDS = 2.0
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

        return cls(
            max_body_bytes=cfg.max_request_bytes,
            header_timeout=cfg.header_timeout,
            body_timeout=cfg.body_timeout,
            max_connections_per_ip=cfg.max_connections_per_ip,
            bodies_in_flight_bytes=int((cfg.bodies_in_flight_mb or 0) * MB),
            uncounted=parse_networks(cfg.trusted_proxies),
            ws_max_frames_per_second=cfg.ws_max_frames_per_second,
        )


def install(limits: ServingLimits) -> None:
    """Serve every daphne ``Server`` started after this with ``limits`` (called again: the new limits win).

    daphne's ``Server.run`` builds its HTTP factory from the ``daphne.server`` module's name, which this
    replaces; also lifts the open-file limit to the hard limit (FI12)."""
    from daphne import server as daphne_server

    from hosting.serving import asgi_limits as app_limits
    from hosting.serving.connections import LimitedHTTPFactory
    from hosting.serving.server import raise_fd_limit
    from hosting.serving.ws_messages import LimitedWebSocketFactory

    global _limits
    _limits = limits
    BUDGET.cap = limits.bodies_in_flight_bytes
    app_limits.counted_below = True  # this layer counts the bodies in flight: the application's budget stands down
    daphne_server.HTTPFactory = LimitedHTTPFactory
    daphne_server.WebSocketFactory = LimitedWebSocketFactory
    raise_fd_limit()


def active() -> ServingLimits:
    """The limits ``install`` set last (no limits before it ran)."""
    return _limits


_limits = ServingLimits()
BUDGET = Budget()  # bodies held on this process's connections, against bodies_in_flight_bytes


def answer_and_close(
    transport: Any, status: int, reason: bytes, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Write a complete JSON answer straight to the socket, then close it lingering (see the module doc)."""
    from twisted.internet import reactor

    if transport is None:
        return
    body = json.dumps({"error": message}).encode()
    extra = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    transport.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%s\r\n%s" % (status, reason, len(body), extra, body)
    )
    try:
        transport.loseWriteConnection()
    except (AttributeError, NotImplementedError):  # a transport that cannot half-close
        transport.loseConnection()
        return
    reactor.callLater(LINGER_SECONDS, transport.loseConnection)


def uncounted(address: str) -> bool:
    """A trusted proxy's address: its connections are not counted against ``max_connections_per_ip``."""
    if not _limits.uncounted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _limits.uncounted)


_last_warning: dict[str, float] = {}


def warn_once(kind: str, message: str, *args: Any) -> None:
    """One line a minute per kind of refusal, whatever the flood."""
    now = time.monotonic()
    if now - _last_warning.get(kind, -WARN_EVERY) >= WARN_EVERY:
        _last_warning[kind] = now
        log.warning(message, *args)
