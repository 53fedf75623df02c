"""daphne's WebSocket protocol held to the serving limits (``hosting.serving.limits``): the messages being received
count in the bodies-in-flight budget, and each socket is held to ``ws_max_frames_per_second``."""

from __future__ import annotations

import json

from daphne import ws_protocol

from hosting.serving.limits import BUDGET, active, warn_once
from hosting.ws.wslimits import TOO_MANY_FRAMES, FrameBudget, too_many_frames, warn_flood


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

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._flooded:
            return
        rate = active().ws_max_frames_per_second
        if self._frames is None:
            self._frames = FrameBudget(rate)
        if self._frames.take():
            super().onMessage(payload, isBinary)
            return
        self._flooded = True
        client = getattr(self, "client_addr", None)
        warn_flood(client[0] if client else None, rate)
        self.sendMessage(json.dumps(too_many_frames(rate)).encode(), False)
        # Later frames are still read and parsed, and dropped here (``_flooded``): the client's answering Close is
        # seen, so the closing handshake completes and the socket ends with a FIN. Dropping raw bytes instead left
        # it to autobahn's close timeout, whose drop could reach a client still sending as a reset that threw
        # away the ERROR and the 4429 close frame before the client read them.
        self.sendClose(code=TOO_MANY_FRAMES)

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
        warn_once("busy-ws", "closing a WebSocket: %d bytes of bodies in flight (bodies_in_flight_mb)", BUDGET.used)
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


class LimitedWebSocketFactory(ws_protocol.WebSocketFactory):
    protocol = LimitedWebSocketProtocol
