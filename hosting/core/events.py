"""Turn events: the agent thread's IO object, and the in-process hub that fans events out to viewers.

Agent thread → ``TurnIO.send`` stamps the event (number, ``ts``, ``session_id``), logs it for replay,
then hands it to the loop with ``call_soon_threadsafe``; the hub puts it on each viewer's queue.
Answers travel back through ``TurnIO.deliver`` into a thread-safe inbox the agent blocks on.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hosting.core.jsonwire import dumps

VIEWER_QUEUE = 10_000
VIEWER_QUEUE_BYTES = 16 * 1024 * 1024  # per viewer; the host sets ``ws_send_buffer_mb``
ANSWER_TYPES = {"ask_user": "ASK_USER_RESPONSE", "approval_needed": "APPROVAL_RESPONSE"}


class TurnInterrupted(BaseException):
    """Raised inside the agent thread at the next step boundary after a cancel.

    A ``BaseException`` so that user code's ``except Exception`` does not swallow it. ``partial`` is what the
    turn had answered so far (set by ``hosting.core.agents.TurnAgent``; PROTOCOL D29).
    """

    partial: str = ""


class AnswerTimeout(Exception):
    """Nobody answered an ``ask_user`` / ``approval_needed`` within ``answer_timeout``."""


@dataclass
class PendingRequest:
    """The question or approval the turn is blocked on; answers must name its ``id``."""

    id: str
    kind: str  # "ask_user" | "approval_needed"

    @property
    def answer_type(self) -> str:
        return ANSWER_TYPES[self.kind]


class TurnIO:
    """The released connectonion IO interface (``send``/``receive``/``receive_all``) for one turn."""

    def __init__(
        self,
        *,
        session_id: str,
        first_seq: int,
        emit: Callable[[dict[str, Any]], None],
        interactive: bool,
        answer_timeout: float,
        on_pending: Callable[[PendingRequest | None], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self._seq = first_seq
        self._seq_lock = threading.Lock()
        self._emit = emit
        self.interactive = interactive
        self.answer_timeout = answer_timeout
        self._on_pending = on_pending
        self._inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._held: list[dict[str, Any]] = []
        self.cancelled = threading.Event()
        self.pending: PendingRequest | None = None
        # Runtime input (PROTOCOL §4 INPUT row, issue 17.7b): what the client sent while this turn runs. Closed
        # until the agent opens it (``open_runtime_inputs``, as the released ``runtime_input`` plugin does).
        self._runtime: list[dict[str, Any]] = []
        self._runtime_lock = threading.Lock()
        self._accepting_runtime = False

    # -- agent thread ---------------------------------------------------------------------------------
    def send(self, event: dict[str, Any]) -> None:
        if self.cancelled.is_set():
            raise TurnInterrupted()
        kind = event.get("type")
        if kind == "session_sync":
            return  # optional (PROTOCOL §4.7.2); OUTPUT carries the session
        if kind == "llm_call":
            self.publish({"type": "thinking"})  # D18: thinking precedes every model call
        self.publish(dict(event))
        if kind in ANSWER_TYPES and self._on_pending and self.pending is not None:
            self._on_pending(self.pending)

    _send_persisted_trace = send

    def send_image(self, image_data: str) -> None:
        self.send({"type": "agent_image", "image": image_data})

    def log(self, event_type: str, **data: Any) -> None:
        self.send({"type": event_type, **data})

    def receive(self) -> dict[str, Any]:
        """Block until the client answers (or interrupts). Non-interactive turns get a refusal."""
        pending = self.pending
        try:
            if not self.interactive:
                return _refusal(pending)
            if self._held:
                return self._held.pop(0)
            try:
                message = self._inbox.get(timeout=self.answer_timeout)
            except queue.Empty:
                raise AnswerTimeout(f"no answer within {int(self.answer_timeout)} s") from None
            return message
        finally:
            self.pending = None
            if self._on_pending and pending is not None:
                self._on_pending(None)

    def receive_all(self, msg_type: str | None = None) -> list[dict[str, Any]]:
        self._drain()
        taken = [m for m in self._held if msg_type is None or m.get("type") == msg_type]
        self._held = [m for m in self._held if not (msg_type is None or m.get("type") == msg_type)]
        return taken

    def poll(self) -> dict[str, Any] | None:
        self._drain()
        return self._held.pop(0) if self._held else None

    def _drain(self) -> None:
        while True:
            try:
                self._held.append(self._inbox.get_nowait())
            except queue.Empty:
                return

    # -- runtime input (the released WebSocketIO's names, so its ``runtime_input`` plugin works unchanged) ----
    def open_runtime_inputs(self) -> None:
        """The agent takes runtime input from now on (agent thread)."""
        with self._runtime_lock:
            self._accepting_runtime = not self.cancelled.is_set()

    def pop_runtime_inputs(self) -> list[dict[str, Any]]:
        """Take every runtime input that arrived so far; the window stays open (agent thread)."""
        with self._runtime_lock:
            taken, self._runtime = self._runtime, []
        return taken

    def finish_runtime_inputs(self) -> list[dict[str, Any]]:
        """Take what arrived and close the window in one step, so nothing accepted is left unread."""
        with self._runtime_lock:
            taken, self._runtime = self._runtime, []
            self._accepting_runtime = False
        return taken

    def close_runtime_inputs(self) -> None:
        """The turn is ending (host side): later runtime input is refused."""
        with self._runtime_lock:
            self._accepting_runtime = False

    @property
    def accepts_runtime_input(self) -> bool:
        return self._accepting_runtime and not self.cancelled.is_set()

    def push_runtime_input(self, message: dict[str, Any]) -> bool:
        """Queue one runtime input for the agent (loop side); False when the turn does not take it now."""
        with self._runtime_lock:
            if not self._accepting_runtime or self.cancelled.is_set():
                return False
            self._runtime.append(message)
            return True

    def publish(self, event: dict[str, Any]) -> dict[str, Any]:
        """Number, stamp and emit one frame as it is (no cancel check: terminal frames use this too)."""
        with self._seq_lock:
            self._seq += 1
            if "id" in event and event.get("type") != "thinking":
                event["trace_id"] = event["id"]  # keep the agent's own id (llm_call/llm_result share one)
            event["id"] = str(self._seq)
            event.setdefault("ts", time.time())
            event["session_id"] = self.session_id
            if event.get("type") in ANSWER_TYPES:
                # Pending before the client can see the question, so a quick answer is never "stale".
                self.pending = PendingRequest(event["id"], event["type"])
            self._emit(event)
        return event

    # -- loop side ------------------------------------------------------------------------------------
    def deliver(self, message: dict[str, Any]) -> None:
        """Hand a client message (an answer, INTERRUPT, a custom frame) to the agent's inbox."""
        if message.get("type") == "INTERRUPT":
            self.cancelled.set()
        self._inbox.put(message)


NO_APPROVER = "no interactive client: approvals need a WebSocket connection"


def _refusal(pending: PendingRequest | None) -> dict[str, Any]:
    """HTTP turns have nobody to ask: questions get no answer, approvals are refused."""
    if pending is not None and pending.kind == "approval_needed":
        return {
            "type": "APPROVAL_RESPONSE",
            "approved": False,
            "scope": "once",
            "mode": "reject_soft",
            "feedback": NO_APPROVER,
        }
    return {"type": "ASK_USER_RESPONSE", "answer": None}


class Subscription:
    """One viewer's queue of live events for a session, bounded in events and in bytes (an event's JSON size).

    Past either bound the event is dropped and the viewer marked ``lagged``: it backfills from the event log,
    which is on disk, so a viewer that falls behind costs no memory.
    """

    def __init__(self, hub: Hub, session_id: str) -> None:
        self.hub = hub
        self.session_id = session_id
        self.queue: asyncio.Queue[tuple[dict[str, Any], int]] = asyncio.Queue(maxsize=VIEWER_QUEUE)
        self.queued_bytes = 0
        self.lagged = False

    def put(self, event: dict[str, Any], size: int) -> None:
        if self.queued_bytes + size > self.hub.max_queue_bytes > 0 and not self.queue.empty():
            self.lagged = True
            return
        try:
            self.queue.put_nowait((event, size))
        except asyncio.QueueFull:
            self.lagged = True  # the viewer backfills from the event log
            return
        self.queued_bytes += size

    async def get(self) -> dict[str, Any]:
        event, size = await self.queue.get()
        self.queued_bytes -= size
        return event

    def close(self) -> None:
        self.hub._remove(self)


class Hub:
    """In-process fan-out of live events to the viewers of each session (loop thread only)."""

    def __init__(self, max_queue_bytes: int = VIEWER_QUEUE_BYTES) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self.max_queue_bytes = max_queue_bytes  # per viewer; 0 = events only

    def subscribe(self, session_id: str) -> Subscription:
        sub = Subscription(self, session_id)
        self._subs.setdefault(session_id, set()).add(sub)
        return sub

    def publish(self, session_id: str, event: dict[str, Any]) -> None:
        subs = tuple(self._subs.get(session_id, ()))
        if not subs:
            return
        size = len(dumps(event))
        for sub in subs:
            sub.put(event, size)

    def wants(self, session_id: str) -> bool:
        """Whether a live event of this session has anywhere to go (any thread; a dict read).

        A viewer that subscribes just after a False reads the event from the replay log, which is
        written before this is asked, so skipping the hand-off to the loop loses nothing.
        """
        return bool(self._subs.get(session_id))

    def viewers(self, session_id: str) -> int:
        return len(self._subs.get(session_id, ()))

    joins_turns = False  # whether ``turn_starting`` has work to do (the bridge's ``turn.<id>`` join)

    async def turn_starting(self, session_id: str) -> None:
        """A turn of ``session_id`` is about to start in this process, before its ``running`` record is written.
        Nothing to do in one process; across workers the bridge joins the turn's group here
        (``hosting.core.bridged_hub.BridgedHub``), so answers sent from elsewhere find the turn from its start."""

    def turn_not_started(self, session_id: str) -> None:
        """The turn announced by ``turn_starting`` was refused before it ran (busy, not the owner, a store error)."""

    def sessions(self) -> list[str]:
        """The sessions that have a viewer in this process now."""
        return list(self._subs)

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                with contextlib.suppress(KeyError):
                    del self._subs[sub.session_id]
