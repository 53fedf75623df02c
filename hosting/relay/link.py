"""The agent's link to a relay (PROTOCOL §8.1): announce, heartbeat, reconnect, and relayed conversations.

A ``RelayLink`` keeps one plain ``websockets`` connection to ``<relay>/ws/announce``. Every frame the
relay forwards belongs to one client socket (route key = ``conn_id``, else ``session_id``); each route
gets its own conversation object, built by the ``conversation_factory`` the host passes in (the same
kind of object a direct ``/ws`` socket gets), and its own task, so a slow conversation never holds up
another or the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from common.errors import HostError
from hosting.conversation.seal import sealed_size
from hosting.core.config import HostConfig
from hosting.core.jsonwire import decode_frame, frame_too_large
from hosting.relay import wire
from hosting.relay.routes import (
    ConversationFactory,
    LegacyInput,
    Routes,
    SendFrame,
    is_tag,
    lenient_tags,
    tag,
)

logger = logging.getLogger("connectonion.relay")

BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
LOUD_AFTER = 5
UNREACHABLE = "unreachable"  # the state while the relay cannot be reached: /health shows it, the host is fine
DEFAULT_MAX_SIZE = 256 * 1024 * 1024  # the released client's and relay's budget
TAG_ROOM = 4096  # bytes a relay may add to a client's frame (session_id, conn_id) on top of the host's cap
TAG_BYTES = 1024  # room for the relay's routing tags around a frame

__all__ = ["RelayLink", "SendFrame"]


class RelayLink:
    """Keeps this agent announced on a relay and serves the conversations relayed to it.

    Use ``await start()`` / ``await stop()`` inside the host's event loop, or ``await run()`` to own the
    loop (the ``announce`` command). ``state`` is ``"disabled"``, ``"connecting"``, ``"connected"`` or
    ``"unreachable"`` (no connection; the reason is in the log) or ``"refused: <the relay's error>"``: what
    the banner and ``/health`` show.
    """

    def __init__(
        self,
        identity: wire.Signer,
        *,
        relay_url: str | None,
        conversation_factory: ConversationFactory,
        legacy_input: LegacyInput | None = None,
        endpoints: Sequence[str] = (),
        summary: str = "",
        profile: dict[str, Any] | None = None,
        heartbeat_interval: float = 60.0,
        idle_timeout: float = 300.0,
        max_conversations: int = 256,
        max_size: int = DEFAULT_MAX_SIZE,
        frame_limit: int | None = None,
        plain_limit: int | None = None,
        backoff: Sequence[float] = BACKOFF,
        jitter: float = 0.2,
        stable_after: float = 10.0,
        open_timeout: float = 10.0,
        inbox_size: int = 256,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.on_state = on_state
        self.identity = identity
        self.relay_base = wire.relay_base(relay_url)
        self.endpoints = list(endpoints)
        self.summary = summary
        self.profile = profile
        self.heartbeat_interval = heartbeat_interval
        self.max_size = max_size
        # Frames over ``frame_limit`` are refused one by one, like /ws refuses them; only a frame over the
        # socket's ``max_size`` closes the link (1009).
        self.frame_limit = min(frame_limit or max_size, max_size)
        self.plain_limit = min(plain_limit or self.frame_limit, self.frame_limit)  # for frames not SEALED
        self.backoff = tuple(backoff)
        self.jitter = jitter
        self.stable_after = stable_after
        self.open_timeout = open_timeout

        self.failures = 0
        self._outage_logged = False
        self.announces_sent = 0
        self._state = "disabled" if self.relay_base is None else "connecting"
        self._ws: Any = None
        self._refused = False
        self._last_timestamp = 0
        self.routes = Routes(
            send=self._send,
            conversation_factory=conversation_factory,
            legacy_input=legacy_input,
            max_conversations=max_conversations,
            idle_timeout=idle_timeout,
            inbox_size=inbox_size,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def from_config(
        cls,
        config: HostConfig,
        identity: wire.Signer,
        *,
        conversation_factory: ConversationFactory,
        legacy_input: LegacyInput | None = None,
        summary: str | None = None,
        profile: dict[str, Any] | None = None,
        **options: Any,
    ) -> RelayLink:
        """A link for this host: relay URL, endpoints, summary (host.yaml first) and frame cap from config.

        ``summary`` is the fallback when host.yaml has none (e.g. the agent's system prompt).
        """
        text = config.summary or summary
        if text and len(text) > wire.SUMMARY_LIMIT:
            logger.warning(
                "relay: the summary is %d characters and relays take %d; announcing the first %d",
                len(text),
                wire.SUMMARY_LIMIT,
                wire.SUMMARY_LIMIT,
            )
        plain = config.max_request_bytes or DEFAULT_MAX_SIZE
        # A maximal plain frame may arrive sealed (about 4/3 larger, PROTOCOL §4.8); the conversation then
        # holds the plain frame inside to the host's cap. An unsealed frame is held to it here.
        cap = sealed_size(plain) + TAG_ROOM
        options.setdefault("frame_limit", cap)
        options.setdefault("plain_limit", plain + TAG_ROOM)
        options.setdefault("max_size", max(DEFAULT_MAX_SIZE, cap))
        return cls(
            identity,
            relay_url=config.relay_url,
            conversation_factory=conversation_factory,
            legacy_input=legacy_input,
            endpoints=wire.endpoints_for(config),
            summary=wire.fit_summary(text, name=config.name),
            profile=profile,
            **options,
        )

    # -- public surface ------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def _state(self) -> str:
        return self.__dict__.get("_state_value", "disabled")

    @_state.setter
    def _state(self, value: str) -> None:
        """Every state change goes through here, so ``on_state`` (the host's /health, its log) follows it."""
        old = self.__dict__.get("_state_value")
        self.__dict__["_state_value"] = value
        if value != old and getattr(self, "on_state", None) is not None:
            try:
                self.on_state(value)
            except Exception:
                logger.exception("relay: the on_state callback failed")

    @property
    def conversations(self) -> int:
        """How many relayed conversations are open right now."""
        return len(self.routes)

    async def start(self) -> None:
        """Run the link as a background task of the running loop (no-op when the relay is disabled)."""
        if self.relay_base is None:
            logger.info("relay: disabled (relay_url is empty)")
            return
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name="relay-link")

    async def stop(self) -> None:
        """Close the relay socket, end every relayed conversation and wait for the task to finish."""
        self._stopping = True
        task, self._task = self._task, None
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1001, "agent stopping"), 5)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.routes.stop()
        self._state = "disabled"

    async def run(self) -> None:
        """Connect, announce and serve until cancelled, reconnecting after every failure."""
        if self.relay_base is None:
            self._state = "disabled"
            return
        loop = asyncio.get_running_loop()
        while not self._stopping:
            began = loop.time()
            self._refused = False
            clean, reason = await self._serve_connection()
            if self._stopping:
                return
            healthy = not self._refused and loop.time() - began >= self.stable_after
            if healthy:
                self.failures = 0
                if clean:
                    # A relay that closes cleanly (redeploy) is reconnected at once (PROTOCOL §8.1).
                    logger.info("relay: %s closed the connection; reconnecting", self.relay_base)
                    self._state = "connecting"
                    continue
            self.failures += 1
            if not self._refused:
                self._state = UNREACHABLE
            delay = self._delay(self.failures)
            self._log_failure(reason, delay)
            await asyncio.sleep(delay)

    def _log_failure(self, reason: str, delay: float) -> None:
        """Offline is quiet (issue 17.5): one line after ``LOUD_AFTER`` consecutive failures (PROTOCOL
        §8.1), then nothing until the relay is back; each attempt is a DEBUG line."""
        if self.failures == LOUD_AFTER:
            self._outage_logged = True
            logger.warning(
                "relay: %s unreachable (%d attempts; last: %s); the local HTTP and WebSocket service is "
                "unaffected; retrying quietly, at most every %.0f s",
                self.relay_base,
                self.failures,
                reason,
                self.backoff[-1],
            )
        else:
            logger.debug("relay: %s (%s); attempt %d in %.1f s", reason, self.relay_base, self.failures + 1, delay)

    # -- one connection ------------------------------------------------------------------------------

    def _delay(self, failures: int) -> float:
        base = self.backoff[min(failures, len(self.backoff)) - 1]
        if failures > 1:  # jitter from the second try on, so a recovering relay is not stampeded
            base += random.uniform(0, self.jitter * base)
        return base

    async def _serve_connection(self) -> tuple[bool, str]:
        """One connection from open to close. Returns ``(closed cleanly, reason)``."""
        assert self.relay_base is not None
        url = wire.announce_url(self.relay_base)
        ws = None
        try:
            # No WebSocket pings: the ANNOUNCE heartbeat keeps the socket alive (PROTOCOL §8.1).
            async with websockets.connect(
                url,
                ping_interval=None,
                max_size=self.max_size,
                open_timeout=self.open_timeout,
                close_timeout=5,
                compression=None,
            ) as ws:
                self._ws = ws
                await self._announce(ws)
                if not self._refused:
                    self._state = "connected"
                if self._outage_logged:
                    self._outage_logged = False
                    logger.info("relay: %s reachable again after %d failed attempts", url, self.failures)
                else:
                    logger.info("relay: connected to %s", url)
                heartbeat = asyncio.create_task(self._heartbeat(ws), name="relay-heartbeat")
                try:
                    async for raw in ws:
                        await self._on_frame(ws, raw)
                finally:
                    heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await heartbeat
            return True, f"closed by the relay ({ws.close_code})"
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else (exc.sent.code if exc.sent else 1006)
            return False, f"connection lost ({code})"
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            return False, _describe(exc)
        except Exception as exc:  # a bug must not end the link: log it and go through the backoff
            logger.exception("relay: unexpected failure on the relay connection")
            return False, _describe(exc)
        finally:
            self._ws = None
            await self.routes.end(wait=False)

    async def _announce(self, ws: Any) -> None:
        """Send a freshly signed ANNOUNCE; timestamps strictly increase so a relay never sees a replay."""
        now = max(int(time.time()), self._last_timestamp + 1)
        self._last_timestamp = now
        message = wire.build_announce(
            self.identity,
            endpoints=self.endpoints,
            summary=self.summary,
            profile=self.profile,
            relay_base=self.relay_base,
            now=now,
        )
        await ws.send(json.dumps(message))
        self.announces_sent += 1

    async def _heartbeat(self, ws: Any) -> None:
        """Re-announce every interval whatever the traffic (D10)."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._announce(ws)
            except ConnectionClosed:
                return
            except Exception:
                # Without heartbeats the registration would lapse silently: start over instead.
                logger.exception("relay: could not send the heartbeat ANNOUNCE; reconnecting")
                await ws.close(1011, "heartbeat failed")
                return

    async def _send(self, ws: Any, frame: dict[str, Any]) -> None:
        """Send on one relay socket; a socket that is already gone drops the frame (its routes are ending)."""
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(frame, ensure_ascii=False))

    # -- incoming frames -----------------------------------------------------------------------------

    async def _on_frame(self, ws: Any, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            logger.warning("relay: ignored a binary frame (%d bytes)", len(raw))
            return
        try:  # the decoder of /ws: size cap, strict JSON, depth limit (issue 15.7)
            frame = decode_frame(raw, limit=self.frame_limit)
            if len(raw) > self.plain_limit and frame.get("type") != "SEALED":
                raise frame_too_large(self.plain_limit)
        except HostError as exc:
            await self._refuse_frame(ws, raw, exc)
            return
        conn_id, session_id = frame.get("conn_id"), frame.get("session_id")
        if not is_tag(conn_id) or not is_tag(session_id):
            logger.warning("relay: ignored a frame with malformed routing tags: %r", raw[:200])
            return
        if conn_id or session_id:
            await self.routes.route(ws, frame, conn_id or None, session_id or None)
            return
        kind = frame.get("type")
        if kind == "ANNOUNCE_OK":
            self._refused = False
            self._state = "connected"
        elif kind == "ERROR":
            why = frame.get("error") or frame.get("message")
            logger.error("Relay error: %s", str(why)[:500])
            self._refused = True
            self._state = f"refused: {str(why)[:200]}"
        elif kind == "INPUT":
            await self.routes.start_legacy(ws, frame)
        else:
            logger.warning("relay: dropped an untagged %r frame", str(kind)[:50])

    async def _refuse_frame(self, ws: Any, raw: str, exc: HostError) -> None:
        """A frame the decoder refused: answer its client with the ERROR /ws would send when the frame's
        routing tags can be read (a frame nested too deep for any parser, or over the cap, has none we
        could trust); otherwise log and drop it. The link and every other conversation go on."""
        tags = lenient_tags(raw) if len(raw) <= self.frame_limit else None
        if tags is None:
            logger.warning("relay: dropped a frame (%s; %d characters)", exc.message, len(raw))
            return
        await self._send(ws, tag(exc.as_frame(received=raw[:200]), *tags))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text[:200]
