"""The handshakes of a socket conversation (PROTOCOL §4.2-§4.5): CONNECT, INIT, ATTACH and the implicit one of a
first INPUT, with the D20 rule for repeated handshakes (the gate decides it; this answers as it says).

A mixin of ``hosting.conversation.protocol.Conversation``: it sets ``peer`` and ``session_id``, and uses the
conversation's ``send``, ``_offload``, ``_record``, ``_is_running`` and its viewers (``_watch``, ``_follow``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from rest_framework import serializers

from common.errors import BadRequest, SessionIdRequired, Unauthorized, UnsupportedProtocol
from hosting.conversation import seal
from hosting.core.messages import SessionField
from hosting.core.runtime import Runtime
from sessions_app.transcript import chat_items, merge_sessions

NOT_THE_SEALED_PEER = "unauthorized: CONNECT is not signed by the sealed peer"
PROTOCOL_DESCRIPTOR = {
    "name": "oip",
    "version": "0.1",
    "min_version": "0.1",
    "max_version": "0.1",
    "websocket_path": "/ws",
}


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


class Handshakes:
    """Who is on the other end: one handshake per socket, its session opened or resumed."""

    runtime: Runtime
    transport: str
    peer: Peer | None
    session_id: str | None
    client_session: dict[str, Any] | None
    sealed_by: str | None
    _seal: seal.SealLayer | None
    _requested: dict[str, Any] | None

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
        reply: dict[str, Any] = {
            "type": "CONNECTED",
            "session_id": self.session_id,
            "status": status,
            "protocol": PROTOCOL_DESCRIPTOR,
        }
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
                frame.get("from") == self.peer.signer
                and payload.get("to") == self.peer.to
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
            admission = await self._offload(
                self.runtime.gate.admit, frame, require_to=True, transport=self.transport, ledger=False
            )
        else:
            # The D20 rule (repeats: unproven, refused or anonymous) lives in the gate, for every door.
            admission = await self._offload(self.runtime.gate.admit_handshake, frame, transport=self.transport)
        if (
            frame.get("type") != "CONNECT"
            and isinstance(payload.get("session_id"), str)
            and payload["session_id"] != frame.get("session_id")
        ):
            raise Unauthorized("unauthorized: session_id mismatch")
        self.peer = Peer(
            admission.signer,
            admission.level,
            v2 and admission.signer is not None,
            frame["type"],
            payload.get("to"),
            proven=not admission.unproven,
        )
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
        self._requested = {
            "session_id": self.session_id,
            "kind": frame.get("type"),
            "last_msg_id": frame.get("last_msg_id"),
            "session": await self._client_session(frame),
        }
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
            record is not None and requested["kind"] == "ATTACH" and requested["last_msg_id"] is not None
        ):
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
        admission = await self._offload(
            self.runtime.gate.admit,
            frame if signed else None,
            require_to=False,
            transport=self.transport,
            ledger=self._seal is None,
        )
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
        return {
            "type": "AGENT_PROFILE",
            "session_id": self.session_id,
            "name": self.runtime.config.name or info.name,
            "address": self.runtime.address,
            "model": info.model,
            "tools": list(info.tools),
            "skills": [],
            "seal": True,
            "sealed": self._seal is not None,
        }


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
