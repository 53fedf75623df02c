"""The relayed conversations of one relay link (PROTOCOL §8.1): one route per client socket, its own inbox and
task, so a slow conversation never holds up another or the heartbeat; and the legacy one-shot INPUT (D12).

``Routes`` is owned by ``hosting.relay.link.RelayLink``: the link decodes each frame and hands the ones tagged
for a client socket (route key = ``conn_id``, else ``session_id``) to ``route``; the routing tags of the
frames sent back are written here (``tag``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.errors import (
    AgentFailed,
    FrameDropped,
    HostError,
    InternalError,
    LegacyInputUnsupported,
    TooManyConversations,
)
from hosting.core.jsonwire import encodable

logger = logging.getLogger("connectonion.relay")

SendFrame = Callable[[dict[str, Any]], Awaitable[None]]
SendOn = Callable[[Any, dict[str, Any]], Awaitable[None]]  # send one frame on one relay socket


class Conversation(Protocol):
    """What ``conversation_factory`` returns: one per relayed client socket.

    ``handle`` gets each client frame in order and must return promptly (a turn runs elsewhere and
    reports through ``send``); ``close`` is called exactly once when the route ends (client ``close``,
    idle timeout, relay socket gone, or ``RelayLink.stop``). Running turns are not stopped by it.
    """

    async def handle(self, frame: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


ConversationFactory = Callable[..., "Conversation | Awaitable[Conversation]"]
LegacyInput = Callable[[str, str], Awaitable[str]]


@dataclass(eq=False)
class _Route:
    """One relayed client socket: its tags, its inbox and the task that feeds its conversation."""

    key: str
    conn_id: str | None
    session_id: str | None
    ws: Any
    inbox: asyncio.Queue[dict[str, Any] | None]
    task: asyncio.Task[None] | None = None
    ended: bool = False

    def tag(self, data: dict[str, Any]) -> dict[str, Any]:
        return tag(data, self.conn_id, self.session_id)

    def end(self) -> None:
        """Ask the route's task to finish (after the frames already queued) and close its conversation."""
        if self.ended:
            return
        self.ended = True
        try:
            self.inbox.put_nowait(None)
        except asyncio.QueueFull:
            if self.task is not None:
                self.task.cancel()


class Routes:
    """The open relayed conversations and legacy INPUTs of one link, together at most ``max_conversations``."""

    def __init__(
        self,
        *,
        send: SendOn,
        conversation_factory: ConversationFactory,
        legacy_input: LegacyInput | None,
        max_conversations: int,
        idle_timeout: float,
        inbox_size: int,
    ) -> None:
        self._send = send
        self.conversation_factory = conversation_factory
        self.legacy_input = legacy_input
        self.max_conversations = max_conversations
        self.idle_timeout = idle_timeout
        self.inbox_size = inbox_size
        self._routes: dict[str, _Route] = {}
        self._legacy: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """How many relayed conversations are open right now (legacy INPUTs not counted)."""
        return len(self._routes)

    def _full(self) -> bool:
        return len(self._routes) + len(self._legacy) >= self.max_conversations

    async def route(self, ws: Any, frame: dict[str, Any], conn_id: str | None, session_id: str | None) -> None:
        """Queue a client's frame for its conversation, starting one for a new route; ``close`` ends it."""
        key = conn_id or session_id
        assert key is not None
        route = self._routes.get(key)
        closing = frame.get("type") == "close"
        if route is None:
            if closing:
                return
            if self._full():
                logger.warning("relay: refused a conversation (%d open, the cap)", self.max_conversations)
                await self._send(ws, tag(TooManyConversations().as_frame(), conn_id, session_id))
                return
            route = _Route(key, conn_id, session_id, ws, asyncio.Queue(maxsize=self.inbox_size))
            self._routes[key] = route
            route.task = asyncio.create_task(self._serve(route), name=f"relay-conversation-{key[:8]}")
        if closing:
            # Off the table at once: a later frame with this key (a new socket reusing a session id)
            # starts a new conversation instead of queueing behind the one that is ending.
            del self._routes[key]
            route.end()
            return
        try:
            route.inbox.put_nowait(frame)
        except asyncio.QueueFull:
            logger.warning("relay: conversation %s is not keeping up; dropped a %r frame", key, frame.get("type"))
            await self._send(ws, route.tag(FrameDropped().as_frame()))

    async def _serve(self, route: _Route) -> None:
        """Feed one conversation its frames in order until it ends, then close it."""

        async def send(data: dict[str, Any]) -> None:
            if not route.ended:
                await self._send(route.ws, route.tag(data))

        conversation = None
        try:
            conversation = self.conversation_factory(send, transport="relay")
            if inspect.isawaitable(conversation):
                conversation = await conversation
            await self._feed(route, conversation)
        except Exception:
            logger.exception("relay: could not start a conversation for %s", route.key)
            await self._send(route.ws, route.tag(InternalError().as_frame()))
        finally:
            route.ended = True
            if self._routes.get(route.key) is route:
                del self._routes[route.key]
            if conversation is not None and not inspect.isawaitable(conversation):
                try:
                    await conversation.close()
                except Exception:
                    logger.exception("relay: closing conversation %s failed", route.key)

    async def _feed(self, route: _Route, conversation: Any) -> None:
        """Hand the route's frames to its conversation until the route ends, idles or the conversation ends."""
        while True:
            try:
                frame = await asyncio.wait_for(route.inbox.get(), self.idle_timeout)
            except TimeoutError:
                logger.info("relay: conversation %s idle for %.0f s; ended", route.key, self.idle_timeout)
                return
            if frame is None:
                return
            try:
                await conversation.handle(frame)
            except Exception:
                logger.exception("relay: conversation %s failed on a %r frame", route.key, frame.get("type"))
            if getattr(conversation, "ended", False):
                return  # it ended itself (a refused SEAL, a sealed frame that did not open)

    async def end(self, *, wait: bool) -> None:
        """End every route (the relay socket is gone, or the link stops); ``wait`` for their tasks."""
        routes, self._routes = list(self._routes.values()), {}
        for route in routes:
            route.end()
        tasks = [r.task for r in routes if r.task is not None]
        if wait and tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """End every route and cancel every legacy INPUT, waiting for all of them."""
        await self.end(wait=True)
        for legacy in list(self._legacy):
            legacy.cancel()
        if self._legacy:
            await asyncio.gather(*self._legacy, return_exceptions=True)

    # -- legacy one-shot INPUT (D12) -----------------------------------------------------------------

    async def start_legacy(self, ws: Any, frame: dict[str, Any]) -> None:
        input_id, prompt = frame.get("input_id"), frame.get("prompt")
        if not isinstance(input_id, str) or not isinstance(prompt, str):
            logger.warning("relay: dropped an untagged INPUT without input_id and prompt")
            return
        if self._full():
            await self._send(ws, _legacy_output(input_id, TooManyConversations.message, False))
            return
        task = asyncio.create_task(self._run_legacy(ws, input_id, prompt), name=f"relay-legacy-{input_id[:8]}")
        self._legacy.add(task)
        task.add_done_callback(self._legacy.discard)

    async def _run_legacy(self, ws: Any, input_id: str, prompt: str) -> None:
        try:
            if self.legacy_input is None:
                raise LegacyInputUnsupported()
            result = await self.legacy_input(prompt, input_id)
        except HostError as exc:
            await self._send(ws, _legacy_output(input_id, exc.message, False))
            return
        except Exception:
            logger.exception("relay: legacy INPUT %s failed", input_id)
            await self._send(ws, _legacy_output(input_id, AgentFailed.message, False))
            return
        await self._send(ws, _legacy_output(input_id, result if isinstance(result, str) else str(result), True))


def tag(data: dict[str, Any], conn_id: str | None, session_id: str | None) -> dict[str, Any]:
    """Tag an outgoing frame as PROTOCOL §8.1 says, so the relay routes it back to its client socket.

    With ``conn_id``: that ``conn_id`` plus the frame's own ``session_id`` (else the route's). Without:
    ``session_id`` forced to the route's, because an older relay routes by it.
    """
    if conn_id:
        frame = {**data, "conn_id": conn_id}
        if not frame.get("session_id") and session_id:
            frame["session_id"] = session_id
        return frame
    return {**data, "session_id": session_id}


def _legacy_output(input_id: str, result: str, success: bool) -> dict[str, Any]:
    return {"type": "OUTPUT", "input_id": input_id, "result": result, "success": success}


class _Pairs(dict):  # type: ignore[type-arg]
    """A parsed object that remembers whether a routing key came twice (the tags would be ambiguous)."""

    twice = False


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    found = _Pairs(pairs)
    keys = [k for k, _ in pairs if k in ("conn_id", "session_id")]
    found.twice = len(keys) != len(set(keys))
    return found


def lenient_tags(raw: str) -> tuple[str | None, str | None] | None:
    """``(conn_id, session_id)`` of a frame the strict decoder refused (a duplicate key, nesting past 64),
    read with the plain parser; ``None`` when even that fails, or the tags are missing or ambiguous."""
    try:
        frame = json.loads(raw, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, _Pairs) or frame.twice:
        return None
    conn_id, session_id = frame.get("conn_id"), frame.get("session_id")
    if not is_tag(conn_id) or not is_tag(session_id) or not (conn_id or session_id):
        return None
    return conn_id or None, session_id or None


def is_tag(value: object) -> bool:
    """A routing tag we may echo: a lone surrogate in one would make the reply unsendable."""
    return value is None or (isinstance(value, str) and len(value) <= 200 and encodable(value))
