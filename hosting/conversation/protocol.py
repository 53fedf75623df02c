"""The WebSocket conversation (PROTOCOL §4), shared by the /ws consumer and the relay link.

A transport decodes nothing itself: it hands each text frame to ``Conversation.handle_text`` and
gives the conversation a ``send`` coroutine (and a ``close`` one). Frames are dispatched by type to
small ``on_<type>`` methods. Streaming a turn to the client runs in its own task, so answers,
PONGs and INTERRUPTs are read while events flow.

A socket whose first frame is ``SEAL`` is sealed (PROTOCOL §4.8, ``hosting.conversation.seal``): from the ``SEALED_OK`` on,
``handle`` opens every incoming frame before the ordinary dispatch and ``send`` wraps every outgoing one, so
nothing else in here knows the difference, except that a handshake must be signed by the sealed peer and the
one-use ledger is not consulted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from common.errors import (
    BadRequest,
    HostError,
    InternalError,
    SealRefused,
    SealRejected,
    StaleAnswer,
    UnknownMessageType,
)
from hosting.conversation import seal
from hosting.conversation.handshakes import PROTOCOL_DESCRIPTOR, Handshakes, Peer
from hosting.conversation.viewers import Viewers
from hosting.core.intake import Steered, Submission
from hosting.core.jsonwire import decode_frame, dumps, frame_too_large, loads_object
from hosting.core.runtime import Runtime
from hosting.core.throttle import Caller
from sessions_app.records import LIVE_STATUSES, DoesNotExist

__all__ = ["PROTOCOL_DESCRIPTOR", "Conversation", "Peer", "seal_text"]

log = logging.getLogger("connectonion.ws")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Close = Callable[[int], Awaitable[None]]
HANDSHAKES = ("CONNECT", "INIT", "ATTACH")
OFF_LOOP_BYTES = 256 * 1024  # sealed frames larger than this are opened and wrapped in a pool thread


class Conversation(Handshakes, Viewers):
    """One client conversation: handshake (``Handshakes``), then turns on one session, streamed by ``Viewers``."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        send: Send,
        close: Close | None = None,
        transport: str = "ws",
        address: str | None = None,
    ) -> None:
        self.runtime = runtime
        self._send = send
        self._close = close
        self.transport = transport
        # Limits count an anonymous caller by its address; a relayed client's address is unknown, so each
        # relayed conversation counts as one anonymous caller of its own.
        self.address = address
        self._anonymous = address or f"{transport}:{uuid.uuid4()}"
        self.peer: Peer | None = None
        self.session_id: str | None = None
        self.client_session: dict[str, Any] | None = None
        self._viewer: asyncio.Task[None] | None = None
        self._requested: dict[str, Any] | None = None  # an unproven handshake's session, opened by ``_prove``
        self._pinger: asyncio.Task[None] | None = None
        self._last_seen = time.monotonic()
        self._closed = False
        self._seal: seal.SealLayer | None = None
        self.sealed_by: str | None = None  # the address that sealed this socket
        self._send_lock = asyncio.Lock()  # a sealed socket's counters go out in the order they are assigned
        self.ended = False  # the conversation ended itself (a refused SEAL, a rejected sealed frame)

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin keep-alive (PING every ``ws_ping_interval``; close after ``ws_pong_timeout`` of silence)."""
        self._pinger = asyncio.create_task(self._keepalive())

    async def close(self) -> None:
        """The transport went away. A running turn is never stopped by this (PROTOCOL §4.1)."""
        self._closed = True
        for task in (self._viewer, self._pinger):
            if task is not None and not task.done():
                task.cancel()

    async def send(self, frame: dict[str, Any]) -> None:
        if self._closed or self.ended:
            return
        async with self._send_lock:
            layer = self._seal
            if layer is None:
                await self._send(frame)
                return
            text = seal_text(frame)
            if len(text) > OFF_LOOP_BYTES:
                sealed = await self._offload(layer.wrap_text, text)
            else:
                sealed = layer.wrap_text(text)
            await self._send(sealed)

    async def _end(self, code: int) -> None:
        """End the conversation from our side: close the socket (direct) or the route (relayed)."""
        self.ended = True
        if self._close is not None:
            await self._close(code)

    async def _offload(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Blocking work (the gate, store and log reads, large seals) on the bookkeeping pool (``hosting.core.pools``)."""
        return await self.runtime.pools.bookkeeping.run(fn, *args, **kwargs)

    async def _keepalive(self) -> None:
        cfg = self.runtime.config
        while not self._closed:
            await asyncio.sleep(cfg.ws_ping_interval)
            if time.monotonic() - self._last_seen > cfg.ws_pong_timeout:
                log.info("closing a silent %s connection (no PONG for %.0f s)", self.transport, cfg.ws_pong_timeout)
                if self._close is not None:
                    await self._close(4408)
                return
            with contextlib.suppress(Exception):
                await self.send({"type": "PING"})

    # -- input -------------------------------------------------------------------------------------------
    async def handle_text(self, text: str) -> None:
        """Decode one text frame and handle it; every problem becomes an ERROR frame."""
        self._last_seen = time.monotonic()
        if self.ended:
            return
        limit = self.runtime.config.max_request_bytes
        if self._seal is not None and len(text) > seal.sealed_size(limit):
            # D24 counts the plain frame; a sealed one carries it base64-encoded, about 4/3 larger
            await self.send(frame_too_large(limit).as_frame())
            return
        try:
            frame = decode_frame(text, limit=limit if self._seal is None else seal.sealed_size(limit))
        except HostError as exc:
            await self.send(exc.as_frame(received=text[:200]))
            return
        await self.handle(frame)

    async def handle(self, frame: dict[str, Any]) -> None:
        """Handle one decoded frame: open it first on a sealed socket, then dispatch it."""
        self._last_seen = time.monotonic()
        if self.ended:
            return
        if self._seal is None:
            await self._dispatch(frame)
            return
        text = await self._open(frame)
        if text is None:
            return
        limit = self.runtime.config.max_request_bytes
        if len(text) > limit:
            await self.send(frame_too_large(limit).as_frame())
            return
        try:
            inner = loads_object(text, what="message")
        except HostError as exc:
            await self.send(exc.as_frame(received=text[:200]))
            return
        await self._dispatch(inner)

    async def _open(self, frame: dict[str, Any]) -> str | None:
        """The plaintext of a sealed frame; a frame that does not open ends the conversation (PROTOCOL §4.8)."""
        layer = self._seal
        assert layer is not None
        try:
            cipher = frame.get("c")
            if isinstance(cipher, str) and len(cipher) > OFF_LOOP_BYTES:
                return await self._offload(layer.open, frame)
            return layer.open(frame)
        except SealRejected as exc:
            log.info("%s sealed socket of %s: frame rejected (%s)", self.transport, self.sealed_by, exc.reason)
            await self._end_in_clear(exc)
            return None

    async def _end_in_clear(self, exc: SealRefused | SealRejected) -> None:
        """A seal that failed: its ERROR goes out in the clear, like every word before SEALED_OK (the peer's own
        box may be what failed), then the conversation ends with 4003 (PROTOCOL §4.8)."""
        async with self._send_lock:
            await self._send(exc.as_frame())
        await self._end(4003)

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        """Dispatch a plain frame by its ``type``."""
        kind = frame.get("type")
        if not isinstance(kind, str):
            await self.send(UnknownMessageType(kind).as_frame())
            return
        handler = getattr(self, "on_" + kind.lower(), None) if kind.isupper() or kind == "mode_change" else None
        try:
            if handler is None:
                await self.on_other(kind, frame)
            else:
                await handler(frame)
        except HostError as exc:
            await self.send(exc.as_frame(**({"session_id": self.session_id} if self.session_id else {})))
            refused = self.peer is None and kind in HANDSHAKES and exc.status in (401, 403)
            if (exc.fatal or refused) and self._close is not None:
                await self._close(4003)  # a refused handshake: ERROR, then close (PROTOCOL §2.3)
        except Exception:
            log.exception("unexpected error handling a %s frame", kind)
            await self.send(InternalError().as_frame())

    # -- the seal and keep-alive answers (handshakes: ``Handshakes``) ----------------------------------------
    async def on_seal(self, frame: dict[str, Any]) -> None:
        """SEAL → SEALED_OK, and every later frame of this socket is sealed (PROTOCOL §4.8, D19)."""
        try:
            if self._seal is not None:
                raise SealRefused("this socket is already sealed")
            if self.peer is not None:
                raise SealRefused("SEAL must come before the handshake")
            reply, layer, sealed_by = seal.accept(
                frame, self.runtime.identity, window=self.runtime.config.signature_window
            )
        except SealRefused as exc:
            log.info("%s socket: seal refused (%s)", self.transport, exc.reason)
            await self._end_in_clear(exc)
            return
        async with self._send_lock:  # nothing may go out between SEALED_OK and the first sealed frame
            await self._send(reply)
            self._seal, self.sealed_by = layer, sealed_by

    async def on_pong(self, frame: dict[str, Any]) -> None:
        return None

    # -- turns -------------------------------------------------------------------------------------------
    async def on_input(self, frame: dict[str, Any]) -> None:
        if self.peer is None:
            payload = await self._implicit_handshake(frame)
        else:
            payload = await self._command_payload(frame)
        assert self.peer is not None and self.session_id is not None
        caller = Caller.of(self.peer.signer, self.address, anonymous=self._anonymous)
        submission = Submission(
            payload=payload,
            signer=self.peer.signer,
            level=self.peer.level,
            caller=caller,
            transport=self.transport,
            session_id=self.session_id,
            client_session=self.client_session,
            interactive=True,
            traceparent=frame.get("traceparent"),
        )
        start: dict[str, int] = {}

        async def ready(request: Any) -> None:  # the input is valid: stop showing the last turn, mark the log
            self._stop_viewer()
            start["after"] = await self._offload(self.runtime.eventlog.last_seq, self.session_id)

        taken = await self.runtime.intake.submit(submission, ready=ready)
        if isinstance(taken, Steered):  # runtime input to this session's running turn (the released host's ack)
            ack = {"type": "RUNTIME_INPUT_ACK", "session_id": self.session_id, "id": taken.message_id}
            if taken.input_id:
                ack["input_id"] = taken.input_id
            await self.send(ack)
            return
        self._viewer = asyncio.create_task(
            self._then_follow(lambda: self._stream(self.session_id, start["after"], local=taken))
        )

    async def on_ask_user_response(self, frame: dict[str, Any]) -> None:
        await self._answer(frame, "ask_user")

    async def on_approval_response(self, frame: dict[str, Any]) -> None:
        await self._answer(frame, "approval_needed")

    async def _answer(self, frame: dict[str, Any], kind: str) -> None:
        payload = await self._command_payload(frame)
        turn = self.runtime.turns.active.get(self.session_id or "")
        pending = turn.pending if turn is not None else None
        request_id = payload.get("request_id")
        if turn is None and await self._forward(_normalized_answer(payload, kind), kind=kind, request_id=request_id):
            return  # the turn runs on another worker: the bridge hands the answer to it
        if (
            turn is None
            or pending is None
            or pending.kind != kind
            or (request_id is not None and request_id != pending.id)
        ):
            await self.send(StaleAnswer(request_id, self.session_id).as_frame())
            return
        if self.peer is None or turn.owner != self.peer.signer:
            raise BadRequest("forbidden: only the session's owner may answer")
        turn.io.deliver(_normalized_answer(payload, kind))

    async def on_interrupt(self, frame: dict[str, Any]) -> None:
        await self._command_payload(frame)
        turn = self.runtime.turns.active.get(self.session_id or "")
        if turn is None and await self._forward({"type": "INTERRUPT"}):
            return
        if turn is None or self.peer is None or turn.owner != self.peer.signer:
            raise BadRequest("interrupt requires an active turn")
        turn.cancel()

    on_cancel = on_interrupt  # our own spelling, documented in the README

    async def on_session_status(self, frame: dict[str, Any]) -> None:
        wanted = (frame.get("session") or {}).get("session_id") if isinstance(frame.get("session"), dict) else None
        wanted = wanted or frame.get("session_id")
        status = "not_found"
        if isinstance(wanted, str) and self.peer is not None and self.peer.proven:
            record = await self._record(wanted)
            if record is not None and record.owner == self.peer.signer:
                status = "running" if self._is_running(wanted, record) else "connected"
        await self.send({"type": "SESSION_STATUS", "session_id": wanted, "status": status})

    async def on_other(self, kind: str, frame: dict[str, Any]) -> None:
        turn = self.runtime.turns.active.get(self.session_id or "") if self.peer and self.peer.proven else None
        if turn is not None and self.peer is not None and turn.owner == self.peer.signer:
            turn.io.deliver(frame)  # custom frames go to the running agent's inbox
            return
        if turn is None and self.peer is not None and self.peer.proven and await self._forward(frame):
            return
        if self.peer is None:
            raise BadRequest("authenticate first (send CONNECT)")
        raise BadRequest(f"unknown message type: {kind!r}")

    async def _command_payload(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The object to act on: the signed payload on a v2 socket (PROTOCOL §2.6), else the frame."""
        if self.peer is None:
            raise BadRequest("authenticate first (send CONNECT)")
        if self.peer.v2:
            verified = await self._offload(
                self.runtime.gate.admit_command,
                frame,
                owner=self.peer.signer,
                transport=self.transport,
                ledger=self._seal is None,
            )
            if not self.peer.proven:
                await self._prove(str(frame.get("type")))
            return verified.payload
        if frame.get("type") == "INPUT" and isinstance(frame.get("payload"), dict) and "signature" in frame:
            admission = await self._offload(
                self.runtime.gate.admit, frame, require_to=False, transport=self.transport, ledger=self._seal is None
            )
            return admission.payload
        return frame

    # -- helpers -----------------------------------------------------------------------------------------
    async def _forward(
        self, message: dict[str, Any], *, kind: str | None = None, request_id: str | None = None
    ) -> bool:
        """Send ``message`` to the worker running this session's turn (``hosting.core.bridge``, Redis only)."""
        bridge = self.runtime.bridge
        if bridge is None or self.peer is None or not self.peer.proven or not self.session_id:
            return False
        record = await self._record(self.session_id)
        if record is None or record.status not in LIVE_STATUSES or record.owner != self.peer.signer:
            return False
        return await bridge.forward(self.session_id, message, signer=self.peer.signer, kind=kind, request_id=request_id)

    def _is_running(self, session_id: str, record: Any) -> bool:
        if session_id in self.runtime.turns.active:
            return True
        return record is not None and record.status in LIVE_STATUSES

    async def _record(self, session_id: str | None) -> Any:
        if not session_id:
            return None
        try:
            return await self._offload(self.runtime.store.get, session_id)
        except DoesNotExist:
            return None


def seal_text(frame: dict[str, Any]) -> str:
    """The plaintext a sealed frame carries: the frame as it would go out unsealed."""
    return dumps(frame)


def _normalized_answer(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    if kind == "ask_user":
        return {"type": "ASK_USER_RESPONSE", "answer": payload.get("answer")}
    approved, scope = payload.get("approved"), payload.get("scope", "once")
    if not isinstance(approved, bool) or scope not in ("once", "session"):
        return {"type": "APPROVAL_RESPONSE", "approved": False, "scope": "once", "mode": "reject_hard"}
    answer = {"type": "APPROVAL_RESPONSE", "approved": approved, "scope": scope}
    for key in ("mode", "feedback"):
        if isinstance(payload.get(key), str):
            answer[key] = payload[key]
    return answer
