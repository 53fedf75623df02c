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
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from rest_framework import serializers

from common.errors import (
    BadRequest,
    HostError,
    InternalError,
    SessionIdRequired,
    StaleAnswer,
    Unauthorized,
    UnknownMessageType,
    UnsupportedProtocol,
)
from hosting.conversation import seal
from hosting.core.intake import Steered, Submission
from hosting.core.jsonwire import decode_frame, dumps, frame_too_large, loads_object
from hosting.core.messages import SessionField
from hosting.core.runtime import Runtime
from hosting.core.throttle import Caller
from sessions_app.records import LIVE_STATUSES, DoesNotExist
from sessions_app.transcript import chat_items, merge_sessions

log = logging.getLogger("connectonion.ws")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Close = Callable[[int], Awaitable[None]]
HANDSHAKES = ("CONNECT", "INIT", "ATTACH")
UNSIGNED_ALWAYS = ("PONG", "SESSION_STATUS", "ONBOARD_SUBMIT") + HANDSHAKES
TERMINAL = ("OUTPUT", "ERROR")
POLL_INTERVAL = 0.25
REPLAY_PAGE = 500  # events read from the log per thread hop on resume
OFF_LOOP_BYTES = 256 * 1024  # sealed frames larger than this are opened and wrapped in a pool thread
NOT_THE_SEALED_PEER = "unauthorized: CONNECT is not signed by the sealed peer"
PROTOCOL_DESCRIPTOR = {"name": "oip", "version": "0.1", "min_version": "0.1", "max_version": "0.1",
                       "websocket_path": "/ws"}


@dataclass(frozen=True)
class Peer:
    """Who is on the other end once a handshake succeeded."""

    signer: str | None
    level: str
    v2: bool
    handshake: str
    to: str | None
    # False after a repeated handshake (D20, PROTOCOL §2.4): anyone may have resent it, so nothing of the
    # signer's sessions is shown until a freshly signed command verifies (``_prove``).
    proven: bool = True


class Conversation:
    """One client conversation: handshake, then turns on one session."""

    def __init__(self, *, runtime: Runtime, send: Send, close: Close | None = None, transport: str = "ws",
                 address: str | None = None) -> None:
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
        except seal.SealRejected as exc:
            log.info("%s sealed socket of %s: frame rejected (%s)", self.transport, self.sealed_by, exc)
            # In the clear, like every word before SEALED_OK: the peer's own box may be what failed.
            async with self._send_lock:
                await self._send({"type": "ERROR", "message": seal.REJECTED_PREFIX + str(exc)})
            await self._end(4003)
            return None

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

    # -- handshakes (PROTOCOL §4.2-§4.5) -------------------------------------------------------------------
    async def on_seal(self, frame: dict[str, Any]) -> None:
        """SEAL → SEALED_OK, and every later frame of this socket is sealed (PROTOCOL §4.8, D19)."""
        try:
            if self._seal is not None:
                raise seal.SealRefused("this socket is already sealed")
            if self.peer is not None:
                raise seal.SealRefused("SEAL must come before the handshake")
            reply, layer, sealed_by = seal.accept(frame, self.runtime.identity,
                                                  window=self.runtime.config.signature_window)
        except seal.SealRefused as exc:
            log.info("%s socket: seal refused (%s)", self.transport, exc)
            async with self._send_lock:
                await self._send({"type": "ERROR", "message": seal.REFUSED_PREFIX + str(exc)})
            await self._end(4003)
            return
        async with self._send_lock:  # nothing may go out between SEALED_OK and the first sealed frame
            await self._send(reply)
            self._seal, self.sealed_by = layer, sealed_by

    async def on_pong(self, frame: dict[str, Any]) -> None:
        return None

    async def on_connect(self, frame: dict[str, Any]) -> None:
        peer = await self._authenticate(frame)
        if peer is None:
            return
        wanted = frame.get("session_id") if isinstance(frame.get("session_id"), str) else None
        if not peer.proven:
            await self._unproven(frame, wanted, status="new", profile=True)
            return
        record = await self._record(wanted) if wanted else None
        if wanted and record is not None and record.owner != peer.signer:
            wanted, record = None, None  # someone else's session: silently a new one (PROTOCOL §4.3)
        self.session_id = wanted if wanted and _valid_id(wanted) else str(uuid.uuid4())
        client = await self._client_session(frame)
        running = self._is_running(self.session_id, record)
        status = "running" if running else ("connected" if record is not None else "new")
        reply: dict[str, Any] = {"type": "CONNECTED", "session_id": self.session_id, "status": status,
                                 "protocol": PROTOCOL_DESCRIPTOR}
        if record is not None and record.session is not None:
            merged, newer = merge_sessions(record.session, client)
            if newer:
                reply.update(server_newer=True, session=merged, chat_items=chat_items(merged))
            self.client_session = merged
        await self.send(reply)
        await self.send(self._profile())
        if running:
            self._watch(after=_cursor(frame.get("last_msg_id")))
        else:
            self._follow()

    async def on_init(self, frame: dict[str, Any]) -> None:
        peer = await self._authenticate(frame)
        if peer is None:
            return
        self.session_id = str(uuid.uuid4())
        self.client_session = await self._client_session(frame)
        await self.send({"type": "CONNECTED", "session_id": self.session_id, "status": "new"})
        self._follow()

    async def on_attach(self, frame: dict[str, Any]) -> None:
        wanted = frame.get("session_id")
        if not isinstance(wanted, str) or not wanted:
            raise SessionIdRequired()
        peer = await self._authenticate(frame)
        if peer is None:
            return
        if not peer.proven:
            await self._unproven(frame, wanted, status="expired", profile=False)
            return
        record = await self._record(wanted)
        if record is None or record.owner != peer.signer:
            foreign = record is not None
            self.session_id = str(uuid.uuid4()) if foreign or not _valid_id(wanted) else wanted
            await self.send({"type": "CONNECTED", "session_id": self.session_id, "status": "expired"})
            return
        self.session_id = wanted
        after = _cursor(frame.get("last_msg_id"))
        if self._is_running(wanted, record):
            await self.send({"type": "CONNECTED", "session_id": wanted, "status": "running"})
            self._watch(after=after)
            return
        reply = {"type": "CONNECTED", "session_id": wanted, "status": "completed"}
        for key in ("result", "duration_ms", "session"):
            if record.data.get(key) is not None:
                reply[key] = record.data[key]
        self.client_session = record.session
        await self.send(reply)
        if after is not None:
            self._watch(after=after)  # replays what was missed of the last turn, ending with its OUTPUT
        else:
            self._follow()

    async def _authenticate(self, frame: dict[str, Any]) -> Peer | None:
        """Run the handshake's trust check once per socket (PROTOCOL §4.2)."""
        protocol = frame.get("protocol")
        if protocol is not None and not (
            isinstance(protocol, dict) and protocol.get("name") == "oip" and protocol.get("version") == "0.1"
        ):
            await self.send(UnsupportedProtocol(PROTOCOL_DESCRIPTOR).as_frame())
            return None
        payload = frame.get("payload") if isinstance(frame.get("payload"), dict) else {}
        if self.peer is not None:
            same = (
                frame.get("from") == self.peer.signer and payload.get("to") == self.peer.to
                and (payload.get("signed_commands") == 1) == self.peer.v2
                and frame.get("session_id") in (None, self.session_id)
            )
            if not same:
                raise BadRequest("already authenticated: open a new connection")
            await self.send({"type": "CONNECTED", "session_id": self.session_id, "status": "connected"})
            return None
        v2 = payload.get("signed_commands") == 1
        if self._seal is not None:
            # Inside a seal: signed by the sealed peer, and no ledger, so no repeats to judge (PROTOCOL §2.4, §4.8).
            self._check_sealed_peer(frame)
            admission = await self._offload(self.runtime.gate.admit, frame, require_to=True,
                                            transport=self.transport, ledger=False)
        else:
            # The D20 rule (repeats: unproven, refused or anonymous) lives in the gate, for every door.
            admission = await self._offload(self.runtime.gate.admit_handshake, frame, transport=self.transport)
        if (frame.get("type") != "CONNECT" and isinstance(payload.get("session_id"), str)
                and payload["session_id"] != frame.get("session_id")):
            raise Unauthorized("unauthorized: session_id mismatch")
        self.peer = Peer(admission.signer, admission.level, v2 and admission.signer is not None, frame["type"],
                         payload.get("to"), proven=not admission.unproven)
        return self.peer

    def _check_sealed_peer(self, frame: dict[str, Any]) -> None:
        """Inside a seal the handshake must be signed by the address that sealed it (PROTOCOL §4.8): else a
        stranger could open its own seal and feed it a handshake captured elsewhere, unledgered."""
        if self.sealed_by is None:
            return
        signer = frame.get("from")
        if not (isinstance(signer, str) and signer.lower() == self.sealed_by and "signature" in frame):
            raise Unauthorized(NOT_THE_SEALED_PEER)

    async def _unproven(self, frame: dict[str, Any], wanted: str | None, *, status: str, profile: bool) -> None:
        """D20: answer a repeated handshake as if no session of the signer existed (the sender named the id, so
        echoing it tells nothing), and keep what it asked for until a signed command proves the sender."""
        self.session_id = wanted if wanted and _valid_id(wanted) else str(uuid.uuid4())
        self._requested = {"session_id": self.session_id, "kind": frame.get("type"),
                           "last_msg_id": frame.get("last_msg_id"), "session": await self._client_session(frame)}
        reply: dict[str, Any] = {"type": "CONNECTED", "session_id": self.session_id, "status": status}
        if profile:
            reply["protocol"] = PROTOCOL_DESCRIPTOR
        await self.send(reply)
        if profile:
            await self.send(self._profile())

    async def _prove(self, kind: str) -> None:
        """A signed command verified on an unproven socket: from now on it is the signer's. Open the session the
        handshake asked for as that handshake would have (PROTOCOL §2.4: merged, §5.3), then let the command run;
        a command other than INPUT also starts the viewer the handshake would have started."""
        assert self.peer is not None
        self.peer = replace(self.peer, proven=True)
        requested, self._requested = self._requested, None
        if requested is None:
            return
        record = await self._record(self.session_id)
        if record is not None and record.owner != self.peer.signer:
            self.session_id = str(uuid.uuid4())  # someone else's session: silently a new one (PROTOCOL §4.3)
            record = None
        if record is not None and record.session is not None:
            self.client_session, _newer = merge_sessions(record.session, requested["session"])
        if kind == "INPUT":
            return
        if self._is_running(self.session_id, record) or (
                record is not None and requested["kind"] == "ATTACH" and requested["last_msg_id"] is not None):
            self._watch(after=_cursor(requested["last_msg_id"]))
        else:
            self._follow()

    async def _implicit_handshake(self, frame: dict[str, Any]) -> dict[str, Any]:
        """First frame INPUT (PROTOCOL §4.5): anonymous, or authenticated by the INPUT's own signature.

        Returns the object to act on (the verified payload when signed): the signature is checked, and its
        nonce spent, once.
        """
        signed = any(k in frame for k in ("payload", "from", "signature"))
        self._check_sealed_peer(frame)
        admission = await self._offload(self.runtime.gate.admit, frame if signed else None, require_to=False,
                                        transport=self.transport, ledger=self._seal is None)
        self.peer = Peer(admission.signer, admission.level, False, "INPUT", None)
        session = frame.get("session") if isinstance(frame.get("session"), dict) else None
        if signed and isinstance(admission.payload.get("session"), dict):
            session = admission.payload["session"]
        sid = session.get("session_id") if session else None
        record = await self._record(sid) if isinstance(sid, str) and _valid_id(sid) else None
        if record is not None and record.owner != self.peer.signer:
            sid = None
        self.session_id = sid if isinstance(sid, str) and _valid_id(sid) else str(uuid.uuid4())
        await self.send({"type": "CONNECTED", "session_id": self.session_id, "status": "new"})
        return admission.payload if signed else frame

    # -- turns -------------------------------------------------------------------------------------------
    async def on_input(self, frame: dict[str, Any]) -> None:
        if self.peer is None:
            payload = await self._implicit_handshake(frame)
        else:
            payload = await self._command_payload(frame)
        assert self.peer is not None and self.session_id is not None
        caller = Caller.of(self.peer.signer, self.address, anonymous=self._anonymous)
        submission = Submission(payload=payload, signer=self.peer.signer, level=self.peer.level, caller=caller,
                                transport=self.transport, session_id=self.session_id,
                                client_session=self.client_session, interactive=True,
                                traceparent=frame.get("traceparent"))
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
        self._viewer = asyncio.create_task(self._then_follow(
            lambda: self._stream(self.session_id, start["after"], local=taken)))

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
            turn is None or pending is None or pending.kind != kind
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
            verified = await self._offload(self.runtime.gate.admit_command, frame, owner=self.peer.signer,
                                           transport=self.transport, ledger=self._seal is None)
            if not self.peer.proven:
                await self._prove(str(frame.get("type")))
            return verified.payload
        if frame.get("type") == "INPUT" and isinstance(frame.get("payload"), dict) and "signature" in frame:
            admission = await self._offload(self.runtime.gate.admit, frame, require_to=False,
                                            transport=self.transport, ledger=self._seal is None)
            return admission.payload
        return frame

    # -- streaming ---------------------------------------------------------------------------------------
    def _watch(self, *, after: int | None) -> None:
        assert self.session_id is not None
        self._stop_viewer()
        self._viewer = asyncio.create_task(self._then_follow(
            lambda: self._stream(self.session_id, after, local=None, replay_turn=True)))

    def _follow(self) -> None:
        """While the session is idle, show turns that other connections of its owner start (PROTOCOL §4.9)."""
        assert self.session_id is not None
        self._stop_viewer()
        self._viewer = asyncio.create_task(self._then_follow(None))

    async def _then_follow(self, first: Callable[[], Awaitable[None]] | None) -> None:
        """Finish ``first`` (a stream of this connection's own turn or a resume), then wait for the next turn.

        A turn started elsewhere reaches us through the hub; its prompt goes out as ``user_message`` (this
        viewer never typed it), then its events from the first one, exactly once, like any stream.
        """
        session_id = self.session_id
        assert session_id is not None
        if first is not None:
            await first()
        while not self._closed:
            subscription = self.runtime.hub.subscribe(session_id)
            try:
                await subscription.get()
                turn, record = self.runtime.turns.active.get(session_id), None
                if turn is not None:
                    owned = self.peer is not None and turn.owner == self.peer.signer
                else:
                    record = await self._record(session_id)
                    owned = record is not None and self.peer is not None and record.owner == self.peer.signer
            except BaseException:
                subscription.close()
                raise
            subscription.close()  # _stream subscribes again, then replays this turn from its first event
            if not owned:  # an id named before its first turn, taken by someone else: show nothing
                return
            prompt = turn.prompt if turn is not None else (record.prompt if record is not None else None)
            if prompt:  # (a quick turn may already be over: its record still names the prompt)
                await self.send({"type": "user_message", "content": prompt, "session_id": session_id})
            # The whole turn from its start: its first events may have come before we subscribed.
            await self._stream(session_id, None, local=None, replay_turn=True)

    def _stop_viewer(self) -> None:
        if self._viewer is not None and not self._viewer.done():
            self._viewer.cancel()
        self._viewer = None

    async def _stream(self, session_id: str, after: int | None, *, local: Any, replay_turn: bool = False) -> None:
        """Send every event after ``after`` exactly once, in order: backlog from the log, then live.

        The subscription is opened before the backlog is read, so nothing falls in between; it is opened here,
        inside the task, so a viewer cancelled before it ever ran leaves nothing behind in the hub.
        """
        eventlog = self.runtime.eventlog
        last = after or 0
        subscription = self.runtime.hub.subscribe(session_id)
        try:
            turn_no = None
            if replay_turn:
                turn_no = await self._offload(_turn_to_replay, eventlog, session_id, after)
            last, ended = await self._send_logged(session_id, last, turn=turn_no)
            if ended:
                return
            while True:
                try:
                    event = await asyncio.wait_for(subscription.get(), timeout=POLL_INTERVAL * 4)
                except TimeoutError:
                    event = None
                if event is None or subscription.lagged:
                    subscription.lagged = False
                    last, ended = await self._send_logged(session_id, last)  # another worker's turn, or a lag
                    if ended:
                        return
                    continue
                seq = int(event["id"])
                if seq <= last:
                    continue
                if seq > last + 1:
                    last, _ended = await self._send_logged(session_id, last, before=seq)
                last = seq
                await self.send(event)
                if event.get("type") in TERMINAL:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event stream of %s failed", session_id)
        finally:
            subscription.close()

    async def _send_logged(self, session_id: str, last: int, *, turn: int | None = None,
                           before: int | None = None) -> tuple[int, bool]:
        """Send the logged events after ``last`` (of ``turn``; below ``before``) in pages of at most
        ``REPLAY_PAGE`` events and ``ws_send_buffer_mb`` bytes, so a long backlog is never held whole and its
        first event goes out before the rest is read. Returns the last event sent and whether it was terminal."""
        read = functools.partial(self._offload, self.runtime.eventlog.after)
        page_bytes = int(self.runtime.config.ws_send_buffer_mb * 1024 * 1024)
        while True:
            page = await read(session_id, last, turn=turn, limit=REPLAY_PAGE, max_bytes=page_bytes)
            if not page:
                return last, False
            for event in page:
                seq = int(event["id"])
                if before is not None and seq >= before:
                    return last, False
                last = seq
                await self.send(event)
                if event.get("type") in TERMINAL:
                    return last, True

    # -- helpers -----------------------------------------------------------------------------------------
    async def _forward(self, message: dict[str, Any], *, kind: str | None = None,
                       request_id: str | None = None) -> bool:
        """Send ``message`` to the worker running this session's turn (``hosting.core.bridge``, Redis only)."""
        bridge = self.runtime.bridge
        if bridge is None or self.peer is None or not self.peer.proven or not self.session_id:
            return False
        record = await self._record(self.session_id)
        if record is None or record.status not in LIVE_STATUSES or record.owner != self.peer.signer:
            return False
        return await bridge.forward(self.session_id, message, signer=self.peer.signer, kind=kind,
                                    request_id=request_id)

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

    async def _client_session(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        session = frame.get("session")
        if session is None:
            return None
        if not isinstance(session, dict):
            return None
        try:
            return SessionField().to_internal_value(session)
        except serializers.ValidationError as exc:
            raise BadRequest(str(exc.detail[0])) from None

    def _profile(self) -> dict[str, Any]:
        info = self.runtime.info
        return {"type": "AGENT_PROFILE", "session_id": self.session_id, "name": self.runtime.config.name or info.name,
                "address": self.runtime.address, "model": info.model, "tools": list(info.tools), "skills": [],
                "seal": True, "sealed": self._seal is not None}


def seal_text(frame: dict[str, Any]) -> str:
    """The plaintext a sealed frame carries: the frame as it would go out unsealed."""
    return dumps(frame)


def _turn_to_replay(eventlog: Any, session_id: str, after: int | None) -> int | None:
    """Resume replays the turn the cursor belongs to (or the latest turn when it is unknown)."""
    if after:
        turn = eventlog.turn_of(session_id, after)
        if turn is not None:
            return turn
    return eventlog.last_turn(session_id)


def _cursor(value: Any) -> int | None:
    """``last_msg_id`` → event number; anything unknown means 'from the start of the turn'."""
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _valid_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


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
