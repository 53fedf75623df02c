"""Talk to a hosted agent: ``connect("0x<address>")`` (direct when reachable, else through the relay) or
``connect("http://host:port")`` (direct), then ``.input(prompt)``. ``aconnect`` / ``ainput`` are the async forms.

Lookup follows PROTOCOL §8.3; each ``input`` opens one WebSocket, seals it when ``keys`` are given (``SEAL``,
PROTOCOL §4.8; a host that cannot seal is used bare only over TLS or loopback directly, and through the relay on
a fresh socket, as the released client does), sends ``CONNECT`` (signed with ``signed_commands: 1`` and a nonce
when ``keys`` are given, PROTOCOL §2.6) and one ``INPUT``, answers PINGs,
``ask_user`` and ``approval_needed`` through callbacks, and returns the ``OUTPUT`` result. The session
travels back with the next ``CONNECT``, so consecutive calls continue one conversation.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from common.errors import HostError, SealRefused
from hosting.client.lookup import LOOKUP_TIMEOUT, private_link, resolve_direct
from hosting.client.sockets import AgentNotConnected, AnswerRequired, RemoteAgentError, SealedSocket
from hosting.conversation import seal
from hosting.core.jsonwire import loads_object
from hosting.relay import wire

CONNECTED_TIMEOUT = 30.0
MAX_SIZE = 256 * 1024 * 1024

AskUser = Callable[[dict[str, Any]], "str | Awaitable[str]"]
Approve = Callable[[dict[str, Any]], "bool | Awaitable[bool]"]


class AsyncRemoteAgent:
    """A conversation with one remote agent. Not safe for two concurrent ``ainput`` calls."""

    def __init__(
        self,
        target: str,
        *,
        relay_url: str | None = None,
        keys: Any = None,
        timeout: float = 600.0,
        on_ask_user: AskUser | None = None,
        on_approval: Approve | None = None,
    ) -> None:
        self.keys = keys
        self.timeout = timeout
        self.on_ask_user = on_ask_user
        self.on_approval = on_approval
        self.session: dict[str, Any] | None = None
        self.session_id: str | None = None
        self.transport: str | None = None  # "direct" or "relay" after a call
        self.sealed = False  # whether the last call's socket was sealed (PROTOCOL §4.8)
        if target.startswith(("http://", "https://", "ws://", "wss://")):
            parts = urlsplit(target)
            secure = parts.scheme in ("https", "wss")
            self.address: str | None = None
            self.relay: str | None = None
            self._http = f"{'https' if secure else 'http'}://{parts.netloc}"
            self._direct: str | None = f"{'wss' if secure else 'ws'}://{parts.netloc}/ws"
            self._resolved = True
        elif wire.is_address(target):
            self.address = target.lower()
            self.relay = wire.relay_base(relay_url) or wire.default_relay_base()
            self._http = None
            self._direct = None
            self._resolved = False
        else:
            raise ValueError(f"not an agent address or URL: {target[:80]!r}")

    def reset(self) -> None:
        """Forget the conversation: the next call starts a new session."""
        self.session = None
        self.session_id = None

    async def ainput(
        self,
        prompt: str,
        images: list[str] | None = None,
        files: list[dict[str, Any]] | None = None,
        *,
        timeout: float | None = None,
    ) -> str:
        """Run one turn and return its result text.

        Raises ``RemoteAgentError`` (``AgentNotConnected`` from a relay) for an ERROR, ``AnswerRequired``
        for an ``ask_user`` without a callback, and ``TimeoutError`` after ``timeout`` seconds in all.
        """
        try:
            async with asyncio.timeout(timeout or self.timeout):
                ws, is_direct = await self._open()
                async with ws:
                    return await self._turn(ws, is_direct, prompt, images, files)
        except TimeoutError:
            raise TimeoutError(
                f"no result within {timeout or self.timeout} s; the turn may still run in session {self.session_id}"
            ) from None

    # -- reaching the agent --------------------------------------------------------------------------

    async def _open(self) -> tuple[Any, bool]:
        """The socket for one call and whether it is direct: the agent's own endpoint first, then the relay.

        With keys every socket is offered a SEAL first. A host that cannot seal keeps a bare direct socket
        only over TLS or to loopback (else we go through the relay); a relay socket that did not seal is
        replaced by a fresh bare one (the SEAL used up its first frame), as the released client does.
        """
        if self._http is not None and self.keys is not None and self.address is None:
            self.address = await self._info_address(self._http)
        if not self._resolved:
            self._resolved = True
            assert self.address is not None and self.relay is not None
            self._direct = await resolve_direct(self.address, self.relay)
        if self._direct is not None:
            url = self._direct
            try:
                ws = await _dial(url)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI):
                if self.relay is None:
                    raise
                self._direct = None  # gone since the lookup: use the relay from now on
            else:
                sealed = await self._offer_seal(ws)
                if sealed is not None or self.keys is None or private_link(url):
                    if sealed is None and self.keys is not None:
                        ws = await _fresh(ws, url)
                    return self._using(sealed or ws, "direct")
                await ws.close()  # plaintext across a network to a host that cannot seal: not with keys
                if self.relay is None:
                    raise RemoteAgentError(f"{url} cannot seal and is neither TLS nor loopback; not sending keys there")
                self._direct = None
        assert self.relay is not None
        url = wire.input_url(self.relay)
        ws = await _dial(url)
        sealed = await self._offer_seal(ws)
        if sealed is None and self.keys is not None:
            await ws.close()
            ws = await _dial(url)
        return self._using(sealed or ws, "relay")

    def _using(self, ws: Any, transport: str) -> tuple[Any, bool]:
        self.transport = transport
        self.sealed = isinstance(ws, SealedSocket)
        return ws, transport == "direct"

    async def _offer_seal(self, ws: Any) -> SealedSocket | None:
        """SEAL this socket; ``None`` without keys or when the host does not answer ``SEALED_OK`` in time."""
        if self.keys is None or self.address is None:
            return None
        sent = seal.hello(self.keys, self.address)
        try:
            await ws.send(json.dumps(sent.frame))
            reply = json.loads(await asyncio.wait_for(ws.recv(), seal.HANDSHAKE_TIMEOUT))
            layer = seal.finish(reply if isinstance(reply, dict) else {}, sent)
        except (TimeoutError, ConnectionClosed, ValueError, SealRefused):
            return None
        return SealedSocket(ws, layer)

    @staticmethod
    async def _info_address(http: str) -> str:
        async with httpx.AsyncClient(timeout=LOOKUP_TIMEOUT) as client:
            reply = await client.get(http + "/info")
        address = reply.json().get("address") if reply.status_code == 200 else None
        if not wire.is_address(address):
            raise RemoteAgentError(f"{http}/info did not name an agent address")
        return address.lower()

    # -- one turn ------------------------------------------------------------------------------------

    async def _turn(self, ws: Any, is_direct: bool, prompt: str, images: Any, files: Any) -> str:
        await self._send(ws, self._connect_frame(is_direct))
        connected = await self._until(ws, "CONNECTED", limit=CONNECTED_TIMEOUT)
        self.session_id = connected.get("session_id") or self.session_id
        if isinstance(connected.get("session"), dict):
            self.session = connected["session"]
        command: dict[str, Any] = {"type": "INPUT", "input_id": str(uuid.uuid4()), "prompt": prompt}
        if images:
            command["images"] = list(images)
        if files:
            command["files"] = list(files)
        if not is_direct and self.address:
            command["to"] = self.address
        await self._send(ws, self._command(command))
        output = await self._until(ws, "OUTPUT")
        if isinstance(output.get("session"), dict):
            self.session = output["session"]
        self.session_id = output.get("session_id") or self.session_id
        result = output.get("result")
        return result if isinstance(result, str) else ("" if result is None else json.dumps(result))

    def _connect_frame(self, is_direct: bool) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "CONNECT", "timestamp": int(time.time())}
        if not is_direct and self.address:
            frame["to"] = self.address  # the relay routes by it
        if self.session_id:
            frame["session_id"] = self.session_id
        if self.session:
            frame["session"] = self.session
        if self.keys is not None:
            from trust.signing import sign_payload

            # The nonce makes every CONNECT unique: a host that ledgers handshakes (the released one, on a bare
            # socket) would refuse a second turn's byte-identical CONNECT within the same second.
            payload = {
                "to": self.address,
                "timestamp": frame["timestamp"],
                "signed_commands": 1,
                "nonce": str(uuid.uuid4()),
            }
            frame.update(sign_payload(self.keys.signing_key, payload))
        return frame

    def _command(self, command: dict[str, Any]) -> dict[str, Any]:
        """A v2 signed command when we have keys (PROTOCOL §2.6), else the plain frame."""
        if self.keys is None:
            return command
        from trust.signing import sign_command

        return sign_command(self.keys.signing_key, command, to=self.address)

    async def _until(self, ws: Any, wanted: str, *, limit: float | None = None) -> dict[str, Any]:
        """Read frames until ``wanted``, answering PINGs and requests on the way; ERROR raises."""
        while True:
            try:
                raw = await (asyncio.wait_for(ws.recv(), limit) if limit else ws.recv())
            except ConnectionClosed as exc:
                raise RemoteAgentError(f"the connection closed before {wanted} ({exc})") from None
            if not isinstance(raw, str):
                continue
            try:  # the host's strict decoder: a hostile peer's 100,000-deep frame is skipped, not a crash
                frame = loads_object(raw, what="message")
            except HostError:
                continue
            kind = frame.get("type")
            if kind == wanted:
                return frame
            if kind == "PING":
                await self._send(ws, {"type": "PONG"})
            elif kind == "ERROR":
                message = str(frame.get("message") or frame.get("error") or "error")
                error = AgentNotConnected if "agent not connected" in message.lower() else RemoteAgentError
                raise error(message, frame)
            elif kind == "ask_user":
                await self._send(ws, self._command(await self._ask(frame)))
            elif kind == "approval_needed":
                await self._send(ws, self._command(await self._approve(frame)))

    async def _ask(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.on_ask_user is None:
            raise AnswerRequired(f"the agent asks: {event.get('question')!r} (pass on_ask_user=)", event)
        answer = await _call(self.on_ask_user, event)
        return _answer_frame({"type": "ASK_USER_RESPONSE", "answer": answer}, event)

    async def _approve(self, event: dict[str, Any]) -> dict[str, Any]:
        approved = False if self.on_approval is None else await _call(self.on_approval, event)
        return _answer_frame({"type": "APPROVAL_RESPONSE", "approved": approved is True, "scope": "once"}, event)

    @staticmethod
    async def _send(ws: Any, frame: dict[str, Any]) -> None:
        await ws.send(json.dumps(frame, ensure_ascii=False))


async def _dial(url: str) -> Any:
    return await websockets.connect(url, max_size=MAX_SIZE, open_timeout=10)


async def _fresh(ws: Any, url: str) -> Any:
    """The same endpoint on a new socket: a host that refused the SEAL may have closed this one."""
    await ws.close()
    return await _dial(url)


def _answer_frame(frame: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    if event.get("id") is not None:
        frame["request_id"] = event["id"]  # answers exactly that request (PROTOCOL §4.7.3)
    return frame


async def _call(callback: Callable[[dict[str, Any]], Any], event: dict[str, Any]) -> Any:
    """Run a user callback without blocking the loop: coroutine functions directly, others in a thread."""
    if inspect.iscoroutinefunction(callback):
        return await callback(event)
    value = await asyncio.to_thread(callback, event)
    return await value if inspect.isawaitable(value) else value


class RemoteAgent:
    """The blocking form of ``AsyncRemoteAgent``: ``input()`` runs one turn on a private event loop."""

    def __init__(self, target: str, **options: Any) -> None:
        self.agent = AsyncRemoteAgent(target, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)

    def input(
        self,
        prompt: str,
        images: list[str] | None = None,
        files: list[dict[str, Any]] | None = None,
        *,
        timeout: float | None = None,
    ) -> str:
        """Run one turn; see ``AsyncRemoteAgent.ainput``. Inside a running loop use ``await ainput()``."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agent.ainput(prompt, images, files, timeout=timeout))
        raise RuntimeError("input() cannot run inside an event loop; use 'await agent.ainput(...)'")

    async def ainput(
        self,
        prompt: str,
        images: list[str] | None = None,
        files: list[dict[str, Any]] | None = None,
        *,
        timeout: float | None = None,
    ) -> str:
        return await self.agent.ainput(prompt, images, files, timeout=timeout)


def connect(target: str, *, relay_url: str | None = None, keys: Any = None, **options: Any) -> RemoteAgent:
    """A blocking client for ``"0x<address>"`` (looked up on ``relay_url``) or ``"http://host:port"``.

    ``keys`` is an identity (``trust.identity.AgentIdentity``) to sign with, or ``None`` for anonymous.
    Options: ``timeout`` (s, whole call), ``on_ask_user(event) -> str``, ``on_approval(event) -> bool``.
    """
    return RemoteAgent(target, relay_url=relay_url, keys=keys, **options)


async def aconnect(target: str, *, relay_url: str | None = None, keys: Any = None, **options: Any) -> AsyncRemoteAgent:
    """The async form of ``connect``; use ``await agent.ainput(prompt)``."""
    return AsyncRemoteAgent(target, relay_url=relay_url, keys=keys, **options)
