"""The viewers of a socket conversation: a turn's events streamed to the client exactly once, in order
(backlog from the replay log, then live from the hub), resume after a reconnect, and the turns that other
connections of the session's owner start (PROTOCOL §4.9).

A mixin of ``hosting.conversation.protocol.Conversation``: one viewer task at a time (``_viewer``); it uses
the conversation's ``send``, ``_offload`` and ``_record``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hosting.core.runtime import Runtime

log = logging.getLogger("connectonion.ws")

TERMINAL = ("OUTPUT", "ERROR")
POLL_INTERVAL = 0.25
REPLAY_PAGE = 500  # events read from the log per thread hop on resume


class Viewers:
    """Streams of events to this socket; a new one replaces the last (``_stop_viewer``)."""

    runtime: Runtime
    peer: Any
    session_id: str | None
    _closed: bool
    _viewer: asyncio.Task[None] | None

    def _watch(self, *, after: int | None) -> None:
        assert self.session_id is not None
        self._stop_viewer()
        self._viewer = asyncio.create_task(
            self._then_follow(lambda: self._stream(self.session_id, after, local=None, replay_turn=True))
        )

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

    async def _send_logged(
        self, session_id: str, last: int, *, turn: int | None = None, before: int | None = None
    ) -> tuple[int, bool]:
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


def _turn_to_replay(eventlog: Any, session_id: str, after: int | None) -> int | None:
    """Resume replays the turn the cursor belongs to (or the latest turn when it is unknown)."""
    if after:
        turn = eventlog.turn_of(session_id, after)
        if turn is not None:
            return turn
    return eventlog.last_turn(session_id)
