"""Live events across worker processes through the Redis channel layer (``redis_url`` with ``--workers N``).

Without it a viewer on another worker sees a turn's events by polling the SQLite event log (about once a
second, ``hosting.conversation.viewers.Viewers._stream``). With it:

* the process running a turn also sends every event of it to the group ``session.<id>``: one pump task
  per running session awaits ``group_send`` event after event, so order is kept;
* every process has one channel of its own (``new_channel()``) and one receive task; the channel joins
  ``session.<id>`` while a local viewer watches that session (first subscribe / last unsubscribe of the
  hub) and received events go into the local hub. Messages carry the sending process's ``origin``,
  which lives only in the bridge envelope (events reach clients untouched) and lets a process skip its
  own events;
* while a turn runs, its process's channel is in ``turn.<id>``: an answer, INTERRUPT or custom frame
  from a viewer on another worker is sent there and handed to ``turn.io.deliver`` after the same checks
  the local path makes (owner, pending kind, request id). The process joins before the turn's ``running``
  record is written (``join_turn``, awaited by the turn manager), since that record is what sends other
  workers there: a message sent the moment they see the turn running finds it. It leaves once the turn's
  terminal frame is out, unless the session's next turn already runs here;
* runtime input (an INPUT while the session's turn runs on another process) goes to ``turn.<id>`` as a request
  naming this process's channel; the runner hands it to the turn if its agent takes it and answers with the
  message id (or none), so the client gets ``RUNTIME_INPUT_ACK`` or the rejection as on one process.

Redis trouble never reaches a viewer: sends and group changes (each bounded by ``CALL_TIMEOUT``, so a frozen
Redis counts as a failure, not a wait) are logged and dropped, the receive task
retries with a backoff, and the viewer's stream still fills any gap from the event log (it reads the log
on a sequence gap and after a second without events), so the worst case is today's polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import uuid
from typing import Any

from common.errors import HostError
from hosting.core.bridged_hub import BridgedHub
from hosting.core.layer_calls import CALL_TIMEOUT, LayerCalls

log = logging.getLogger("connectonion.bridge")

TERMINAL = ("OUTPUT", "ERROR")
EVENT, ANSWER = "bridge.event", "bridge.answer"
STEER, STEERED = "bridge.steer", "bridge.steered"
PUMP_IDLE = 5.0  # a pump with nothing to send checks whether its turn still runs this often
RETRY = (0.5, 1.0, 2.0, 5.0, 10.0)
STEER_WAIT = 2 * CALL_TIMEOUT  # no answer from the runner by then: the runtime input was not taken
GROUP_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")  # what channels accepts (session ids are UUIDs)


class Bridge:
    """One per process, a part of the runtime (``hosting.core.runtime``): built with it, bound to its hub and turns,
    and started on the serving loop when that loop is ready (or on first use, under another ASGI server)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.calls = LayerCalls(layer)
        self.hub: BridgedHub | None = None
        self.turns: Any = None  # the runtime's TurnManager (its ``active`` turns)
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.channel: str | None = None
        self._ready = asyncio.Event()
        self._pumps: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._steers: dict[str, asyncio.Future[str | None]] = {}  # runtime inputs waiting for the runner's word
        self._turn_groups: dict[str, _GroupTurns] = {}  # one join or leave of ``turn.<id>`` at a time, per session
        self._tasks: set[asyncio.Task[Any]] = set()
        self._receiver: asyncio.Task[None] | None = None
        self._stopped = False
        self.received = 0

    @property
    def sent(self) -> int:
        return self.calls.sent

    @property
    def failures(self) -> int:
        return self.calls.failures

    # -- lifecycle ------------------------------------------------------------------------------------
    def bind(self, hub: BridgedHub, turns: Any) -> None:
        """Wire the bridge to the runtime's hub and turns (``hosting.core.runtime._build``, once)."""
        self.hub, self.turns = hub, turns

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start receiving on ``loop`` (the running one by default); again on a new loop if the old one is gone."""
        loop = loop or asyncio.get_running_loop()
        self._stopped = False
        if self._receiver is not None and self._receiver.get_loop() is loop and not self._receiver.done():
            return
        self.channel = None
        self._ready = asyncio.Event()
        self._receiver = loop.create_task(self._receive(), name="bridge-receive")

    def _ensure_started(self) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to receive into yet
            self.start()

    async def stop(self) -> None:
        """Stop receiving and drop the sends and group changes still in flight on this loop (it is ending)."""
        self._stopped = True
        loop = asyncio.get_running_loop()
        tasks = [t for t in (self._receiver, *self._tasks) if t is not None and t.get_loop() is loop]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- outgoing events (the process that runs the turn) ---------------------------------------------
    def outgoing(self, session_id: str, event: dict[str, Any]) -> None:
        """Queue a local event for ``session.<id>`` (loop thread; returns at once)."""
        if not GROUP_NAME.match(session_id):
            return
        self._ensure_started()
        queue = self._pumps.get(session_id)
        if queue is None:
            queue = self._pumps[session_id] = asyncio.Queue()
            self._spawn(self._pump(session_id, queue), f"bridge-pump-{session_id[:8]}")
        queue.put_nowait(event)

    async def _pump(self, session_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Send one running session's events in order; then leave ``turn.<id>`` (joined by ``join_turn``)."""
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), PUMP_IDLE)
                except TimeoutError:
                    if session_id in self.turns.active:
                        continue
                    break
                await self._send(
                    f"session.{session_id}",
                    {"type": EVENT, "origin": self.origin, "session_id": session_id, "event": event},
                )
                if event.get("type") in TERMINAL and queue.empty():
                    break
        finally:
            if self._pumps.get(session_id) is queue:
                del self._pumps[session_id]
            if not queue.empty():  # a new turn began while the last send was in flight
                rest = asyncio.Queue()
                while not queue.empty():
                    rest.put_nowait(queue.get_nowait())
                self._pumps[session_id] = rest
                self._spawn(self._pump(session_id, rest), f"bridge-pump-{session_id[:8]}")
            else:
                self.leave_turn(session_id)

    # -- membership of ``turn.<id>`` (the process that runs the turn) --------------------------------------
    async def join_turn(self, session_id: str) -> None:
        """Join ``turn.<id>`` for a turn about to start here; returns once Redis has it (or the call failed,
        logged: the turn then runs with answers from this worker's own sockets only).

        Called before the turn's ``running`` record is written: other workers forward answers, INTERRUPTs and
        runtime input here as soon as that record says the turn runs, and a group message reaches only the
        channels already in the group when it is sent."""
        if not GROUP_NAME.match(session_id):
            return
        self._ensure_started()
        async with self._one_change(session_id):
            await self._group("add", f"turn.{session_id}")

    def leave_turn(self, session_id: str) -> None:
        """Leave ``turn.<id>`` soon (loop thread; returns at once): the turn ended or never started."""
        if GROUP_NAME.match(session_id):
            self._spawn(self._leave_turn(session_id), "bridge-leave")

    async def _leave_turn(self, session_id: str) -> None:
        async with self._one_change(session_id):
            if session_id in self.turns.active:  # the session's next turn runs here already: it needs the group
                return
            await self._group("discard", f"turn.{session_id}")

    @contextlib.asynccontextmanager
    async def _one_change(self, session_id: str) -> Any:
        """Serialise the joins and leaves of one session's ``turn.<id>``: a leave of the last turn that reached
        Redis after the join of the next would drop the next turn's answers."""
        entry = self._turn_groups.setdefault(session_id, _GroupTurns())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._turn_groups[session_id]

    # -- answers from viewers on other workers --------------------------------------------------------
    async def forward(
        self,
        session_id: str,
        message: dict[str, Any],
        *,
        signer: str | None,
        kind: str | None = None,
        request_id: str | None = None,
    ) -> bool:
        """Send an answer / INTERRUPT / custom frame to the process running ``session_id``'s turn."""
        if not GROUP_NAME.match(session_id):
            return False
        return await self._send(
            f"turn.{session_id}",
            {
                "type": ANSWER,
                "origin": self.origin,
                "session_id": session_id,
                "message": message,
                "signer": signer,
                "kind": kind,
                "request_id": request_id,
            },
        )

    def _deliver(self, envelope: dict[str, Any]) -> None:
        turn = self.turns.active.get(envelope.get("session_id") or "")
        if turn is None or turn.owner != envelope.get("signer"):
            return
        message = envelope.get("message") or {}
        kind = envelope.get("kind")
        if kind is not None:
            pending = turn.pending
            request_id = envelope.get("request_id")
            if pending is None or pending.kind != kind or (request_id is not None and request_id != pending.id):
                log.info("bridge: a stale %s for %s from another worker was dropped", kind, turn.session_id)
                return
        if message.get("type") == "INTERRUPT":
            turn.cancel()
        else:
            turn.io.deliver(message)

    # -- runtime input for a turn running on another process ----------------------------------------
    async def steer(self, session_id: str, prompt: str, *, signer: str | None) -> str | None:
        """Hand ``prompt`` to ``session_id``'s turn on the process running it; the runtime input's id once that
        process took it, None when it did not (its agent takes none, or nobody answered within STEER_WAIT)."""
        if not GROUP_NAME.match(session_id):
            return None
        self._ensure_started()
        reply_id = uuid.uuid4().hex
        waiter: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._steers[reply_id] = waiter
        try:
            await asyncio.wait_for(self._ready.wait(), CALL_TIMEOUT)
            sent = await self._send(
                f"turn.{session_id}",
                {
                    "type": STEER,
                    "origin": self.origin,
                    "session_id": session_id,
                    "signer": signer,
                    "prompt": prompt,
                    "reply_to": self.channel,
                    "reply_id": reply_id,
                },
            )
            return await asyncio.wait_for(waiter, STEER_WAIT) if sent else None
        except TimeoutError:
            return None
        finally:
            self._steers.pop(reply_id, None)

    def _steer_here(self, message: dict[str, Any]) -> None:
        """A runtime input from another process for a turn of ours: the same owner check as the local path.

        A session only reserved here (a turn being prepared, which may yet be refused as busy because another
        process runs it) gets no answer from us: the process that runs the turn answers."""
        session_id = message.get("session_id") or ""
        if session_id in self.turns.active and self.turns.active[session_id] is None:
            return
        turn = self.turns.active.get(session_id)
        prompt, taken = message.get("prompt"), None
        if (
            turn is not None
            and turn.owner == message.get("signer")
            and isinstance(prompt, str)
            and turn.io.accepts_runtime_input
        ):
            with contextlib.suppress(HostError):
                taken = turn.steer(prompt)
        reply_to = message.get("reply_to")
        if isinstance(reply_to, str):
            self._spawn(
                self.calls.send(
                    reply_to, {"type": STEERED, "origin": self.origin, "reply_id": message.get("reply_id"), "id": taken}
                ),
                "bridge-steered",
            )

    def _steered(self, message: dict[str, Any]) -> None:
        waiter = self._steers.get(str(message.get("reply_id")))
        taken = message.get("id")
        if waiter is not None and not waiter.done():
            waiter.set_result(taken if isinstance(taken, str) else None)

    # -- watching (the processes with viewers) --------------------------------------------------------
    def watch(self, session_id: str) -> None:
        if GROUP_NAME.match(session_id):
            self._ensure_started()
            self._spawn(self._group("add", f"session.{session_id}"), "bridge-watch")

    def unwatch(self, session_id: str) -> None:
        if GROUP_NAME.match(session_id):
            self._spawn(self._group("discard", f"session.{session_id}"), "bridge-unwatch")

    async def _receive(self) -> None:
        attempt = 0
        while True:
            try:
                if self.channel is None:
                    self.channel = await self.layer.new_channel(prefix="bridge")
                    self._ready.set()
                    for session_id in self.hub.sessions():
                        await self._group("add", f"session.{session_id}")
                message = await self.layer.receive(self.channel)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the listener reconnects after any failure
                self.calls.failures += 1
                delay = RETRY[min(attempt, len(RETRY) - 1)]
                attempt += 1
                log.warning(
                    "bridge: receiving from the channel layer failed (%s); viewers on this worker "
                    "poll the event log; retrying in %.1f s",
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            try:
                self._on_message(message)
            except Exception:
                log.exception("bridge: could not handle a %r message", message.get("type"))

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("origin") == self.origin:
            return
        self.received += 1
        if message.get("type") == EVENT:
            event, session_id = message.get("event"), message.get("session_id")
            if isinstance(event, dict) and isinstance(session_id, str):
                self.hub.publish_remote(session_id, event)
        elif message.get("type") == ANSWER:
            self._deliver(message)
        elif message.get("type") == STEER:
            self._steer_here(message)
        elif message.get("type") == STEERED:
            self._steered(message)

    # -- channel layer calls that never raise ---------------------------------------------------------
    async def _send(self, group: str, message: dict[str, Any]) -> bool:
        return await self.calls.group_send(group, message)

    async def _group(self, action: str, group: str) -> bool:
        if self.calls.paused():
            return False
        try:
            await asyncio.wait_for(self._ready.wait(), 10)
        except TimeoutError as exc:
            self.calls.failed(f"group_{action} {group}", exc)
            return False
        assert self.channel is not None
        return await self.calls.group_change(action, group, self.channel)

    def _spawn(self, coro: Any, name: str) -> None:
        if self._stopped:
            coro.close()  # (never started: nothing to undo)
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _GroupTurns:
    """The lock that orders one session's ``turn.<id>`` joins and leaves, and how many are waiting on it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def build(redis_url: str | None) -> Bridge | None:
    """The bridge of a runtime whose config names a Redis (``redis_url``), over the project's channel layer."""
    if not redis_url:
        return None
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        log.warning("bridge: no channel layer configured; live events cross workers by polling the event log")
        return None
    return Bridge(layer)
