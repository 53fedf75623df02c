"""The WebSocket frame budget (``ws_max_frames_per_second``, HARDENING W12): one token bucket per socket, its
ERROR and its close code; and ``SocketTransport``, what a socket still owes its client (``ws_send_buffer_mb``). Counted at daphne's layer (``hosting.serving.ws_messages.LimitedWebSocketProtocol``, before a frame
is queued for the application) and again in the consumer, for an ASGI server without that hook."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from common.errors import TooManyFrames

log = logging.getLogger("connectonion.ws")

TOO_MANY_FRAMES = 4429  # like the per-address socket cap: 4000 + HTTP 429
WARN_EVERY = 60.0
_last_warning = -WARN_EVERY


class FrameBudget:
    """A token bucket: ``rate`` frames a second, at most ``rate`` at once. ``rate`` 0 means unlimited."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(rate, 1.0)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        if not self.rate:
            return True
        now = time.monotonic()
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def too_many_frames(rate: float) -> dict[str, Any]:
    return TooManyFrames(rate).as_frame()


def warn_flood(address: Any, rate: float) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARN_EVERY:  # one line a minute, whatever the flood
        _last_warning = now
        log.warning(
            "closing a WebSocket from %s: more than %g frames a second (ws_max_frames_per_second)",
            address or "an unknown address",
            rate,
        )


class SocketTransport:
    """What ASGI does not tell an application about its socket: the bytes sent to it that it has not read yet.

    ASGI has no word for back-pressure: daphne's ``send`` returns as soon as twisted has the bytes, so for a
    client that never reads they pile up in the transport (``unsent``, for ``ws_send_buffer_mb``); uvicorn's
    waits while its transport is full (``waits``), so such a client stalls the sender instead.
    """

    def __init__(
        self, unsent: Callable[[], int], *, waits: bool = False, abort: Callable[[], None] | None = None
    ) -> None:
        self.unsent = unsent
        self.waits = waits  # the server's send waits for the client to read (uvicorn's flow control)
        self.abort = abort or (lambda: None)

    @classmethod
    def of(cls, send: Any) -> SocketTransport | None:
        """daphne hands each application ``partial(server.handle_reply, protocol)``, whose transport is a twisted
        ``FileDescriptor``, maybe behind protocol wrappers; uvicorn hands it a bound method of its protocol, whose
        ``transport`` is an asyncio one. ``None`` elsewhere (in-process tests)."""
        if isinstance(send, functools.partial) and send.args:
            return cls._twisted(getattr(send.args[0], "transport", None))
        protocol = getattr(send, "__self__", None)
        transport = getattr(protocol, "transport", None)
        size = getattr(transport, "get_write_buffer_size", None)
        if not callable(size) or not hasattr(protocol, "writable"):
            return None
        return cls(size, waits=True, abort=transport.abort)

    @classmethod
    def _twisted(cls, transport: Any) -> SocketTransport | None:
        for _ in range(4):  # twisted.protocols.policies wrappers pass writes straight through to the inner one
            if transport is None or hasattr(transport, "_tempDataLen"):
                break
            transport = getattr(transport, "transport", None)
        if transport is None or not hasattr(transport, "_tempDataLen"):
            return None
        t = transport
        return cls(lambda: len(t.dataBuffer) - t.offset + t._tempDataLen)
