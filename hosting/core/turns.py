"""A turn: prompt in → events out → result stored. Written once; every transport calls it.

A turn is **one task** of the agents pool (``TurnManager._task``): the ``running`` record, the agent
and its terminal record (``hosting.core.turnrun``) run in that one thread, and for ``POST /input`` the gate's
admission, the limits and the input's validation before them (``launch``). The loop hears of the turn twice,
through ``call_soon_threadsafe``: when it started (the turn timeout's watchdog is armed, ``start()`` returns) and
when it ended (the answer). So no file I/O happens on the loop, and a turn costs one hand-off to a thread, not
one per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from common import metrics
from common.errors import (
    AgentFailed,
    HostError,
    RuntimeInputRejected,
    ServiceUnavailable,
    SessionBusy,
    TurnTimedOut,
)
from hosting.core import activity as history
from hosting.core.agents import AgentSource
from hosting.core.config import HostConfig
from hosting.core.events import Hub, PendingRequest, TurnIO
from hosting.core.pools import Pools
from hosting.core.turndata import Launch, Release, Take, Turn, TurnRequest, TurnResult
from hosting.core.turnrun import TurnRunner
from hosting.observability.turn import TurnWatch
from sessions_app.eventlog import EventLog
from sessions_app.records import LIVE_STATUSES, DoesNotExist
from sessions_app.store import SessionStore

log = logging.getLogger("connectonion.turns")
activity = logging.getLogger("connectonion.activity")


class TurnManager:
    """Starts turns and keeps track of the ones running in this process."""

    def __init__(
        self,
        *,
        config: HostConfig,
        source: AgentSource,
        store: SessionStore,
        eventlog: EventLog,
        hub: Hub,
        pools: Pools,
    ) -> None:
        self.config = config
        self.source = source
        self.store = store
        self.eventlog = eventlog
        self.hub = hub
        self.pools = pools
        self.runner = TurnRunner(config=config, source=source, store=store, on_terminal=self._release)
        self.active: dict[str, Turn] = {}  # a session's turn here (None while it is being prepared)
        self._active_lock = threading.Lock()  # reservations are made on the loop and in pool tasks
        self.executing: set[Turn] = set()  # turns inside an agent thread (shutdown waits for them)
        self.closing = False  # set on SIGTERM: new turns get 503 while running ones finish

    # -- loop ------------------------------------------------------------------------------------------
    async def start(
        self,
        request: TurnRequest,
        *,
        interactive: bool,
        release: Release | None = None,
        transport: str = "http",
        traceparent: str | None = None,
    ) -> Turn:
        """Check the session, write the ``running`` record and launch the agent; returns once the record exists.

        ``release`` (a concurrency slot of ``hosting.core.throttle``) is called once when the agent thread is
        done with the turn, or at once if the turn does not start.

        A caller cancelled meanwhile (Django cancels the view of an HTTP client that hung up) does not
        strand the ``running`` record being written: the turn still launches and ends like any other (FI8).
        ``transport`` (http, ws, relay) and the client's W3C ``traceparent`` are for metrics and traces only.
        """
        loop = asyncio.get_running_loop()
        session_id = _session_id(request)
        watch = self._watch(session_id, request, transport, traceparent)
        launch = Launch(
            loop,
            loop.create_future(),
            started=loop.create_future(),
            request=request,
            release=release,
            interactive=interactive,
            transport=transport,
            traceparent=traceparent,
            watch=watch,
        )
        launch.started.add_done_callback(_retrieve)
        try:
            self._reserve(session_id)
        except BaseException as exc:
            self._on_refused(launch, exc)
            raise
        launch.session_id = session_id
        if self.hub.joins_turns:
            starting = asyncio.ensure_future(self._join_then_submit(launch))
            starting.add_done_callback(_retrieve)
            await asyncio.shield(starting)
        else:
            self._submit(launch)
        return await asyncio.shield(launch.started)

    async def _join_then_submit(self, launch: Launch) -> None:
        """The hub's ``turn_starting`` (across workers: join ``turn.<id>`` before the record that sends others
        here), then the pool task; shielded from the caller, so a cancelled caller strands nothing (FI8)."""
        assert launch.session_id is not None
        try:
            await self.hub.turn_starting(launch.session_id)
        except BaseException as exc:
            self._on_refused(launch, exc)
            raise
        self._submit(launch)

    def can_launch(self) -> bool:
        """Whether ``launch`` starts a turn at once: an agent thread is free, and no hub step must run on the
        loop before the running record (the bridge's group join)."""
        return not self.hub.joins_turns and self.pools.agents.has_free_thread()

    def launch(
        self, take: Take, *, transport: str = "http", traceparent: str | None = None
    ) -> asyncio.Future[TurnResult]:
        """Run a whole turn, its request included, as one pool task; the future gets its result, or the refusal
        ``take`` or the session check raised (then ``take``'s slot is given back).

        ``take`` runs first in the agent thread: the door's admission, limits and validation (``Intake``). The
        turn is not interactive (nobody to ask: the HTTP door)."""
        loop = asyncio.get_running_loop()
        launch = Launch(loop, loop.create_future(), take=take, transport=transport, traceparent=traceparent)
        launch.done.add_done_callback(_retrieve)
        self._submit(launch)
        return launch.done

    def _submit(self, launch: Launch) -> None:
        _queued(+1)
        try:
            future = self.pools.agents.submit(self._task, launch)
        except BaseException:  # the pool is shut down
            _queued(-1)
            self._on_refused(launch, AgentFailed())
            raise
        future.add_done_callback(lambda f: f.cancelled() and self._post(launch, self._on_cancelled, launch))

    def _on_started(self, launch: Launch, turn: Turn) -> None:
        """The running record exists and the agent is about to run: arm the turn timeout, let ``start()`` return."""
        launch.watchdog = launch.loop.call_later(self.config.turn_timeout, self._time_out, turn)
        if launch.started is not None and not launch.started.done():
            launch.started.set_result(turn)

    def _on_finished(self, launch: Launch, turn: Turn, result: TurnResult) -> None:
        if launch.watchdog is not None:
            launch.watchdog.cancel()
        self._forget(turn.session_id, turn)
        if not launch.done.done():  # (the watchdog may have answered already)
            launch.done.set_result(result)
        if turn.watch is not None:
            turn.watch.ended(result.status)

    def _on_refused(self, launch: Launch, error: BaseException) -> None:
        """The turn did not start: give back its slot and its session, tell whoever waits for it."""
        if launch.release is not None:
            launch.release()
        if launch.session_id is not None:
            self._forget(launch.session_id, None)
            self.hub.turn_not_started(launch.session_id)
        if launch.watch is not None:
            launch.watch.ended("refused")
        waiting = launch.started if launch.started is not None else launch.done
        if not waiting.done():
            waiting.set_exception(error)

    def _on_cancelled(self, launch: Launch) -> None:
        """The pool was shut down before the task ran."""
        _queued(-1)
        self._on_refused(launch, AgentFailed())

    def running(self, session_id: str, owner: str | None) -> Turn | None:
        """The turn running here on ``session_id``, for a runtime input of ``owner``; None when none runs here.

        Someone else's turn, or one still starting, is busy (as a second turn would be); a turn whose agent
        does not take runtime input raises ``RuntimeInputRejected``. Both leave the turn unaffected.
        """
        if session_id not in self.active:
            return None
        turn = self.active[session_id]
        if turn is not None and turn.owner != owner:
            raise SessionBusy("session already has a running agent")
        if turn is None or not turn.io.accepts_runtime_input:
            raise RuntimeInputRejected()
        return turn

    def _release(self, turn: Turn) -> None:
        self._forget(turn.session_id, turn)

    def _time_out(self, turn: Turn) -> None:
        """The agent overran ``turn_timeout``: answer the client now; the thread stops at its next step."""
        if turn.done.done() or self.active.get(turn.session_id) is not turn:
            return  # finished (its terminal frame is on its way)
        turn.io.cancelled.set()
        error = TurnTimedOut()
        self.pools.bookkeeping.submit(self.runner.store_timeout, turn, error)  # not behind the stuck agents
        turn.done.set_result(self.runner.failure_result(turn, {}, error))
        self._forget(turn.session_id, turn)

    # -- any thread ------------------------------------------------------------------------------------
    def _reserve(self, session_id: str) -> None:
        """Hold ``session_id`` for a turn being prepared; raises ``ServiceUnavailable`` (shutting down) or
        ``SessionBusy`` (a turn runs or is being prepared on it here)."""
        if self.closing:
            raise ServiceUnavailable()
        with self._active_lock:
            if session_id in self.active:
                raise SessionBusy()
            self.active[session_id] = None  # type: ignore[assignment]

    def _forget(self, session_id: str, holder: Turn | None) -> None:
        """Drop ``session_id`` from ``active`` if ``holder`` (a turn, or None: a reservation) still holds it."""
        with self._active_lock:
            if session_id in self.active and self.active[session_id] is holder:
                del self.active[session_id]

    def _post(self, launch: Launch, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown)
            launch.loop.call_soon_threadsafe(callback, *args)

    # -- the turn's pool task --------------------------------------------------------------------------
    def _task(self, launch: Launch) -> None:
        """The whole turn in this agent thread: ``_open`` (request, session, running record), the agent and its
        terminal record; then the caller's slot is given back and the loop gets the result."""
        _queued(-1)
        opened = self._open(launch)
        if opened is None:
            return
        turn, request, session, server_newer = opened
        self._post(launch, self._on_started, launch, turn)
        try:
            result = self._execute(turn, request, session, server_newer)
        except BaseException as exc:  # our own machinery, not the agent (the runner turns those into results)
            log.error("turn machinery failed", exc_info=exc)
            result = self.runner.failure_result(turn, session, AgentFailed())
        finally:
            if launch.release is not None:
                launch.release()  # the agent thread is free: so is the caller's slot (even after a timeout)
                launch.release = None
        self._post(launch, self._on_finished, launch, turn, result)

    def _open(self, launch: Launch) -> tuple[Turn, TurnRequest, dict[str, Any], bool] | None:
        """The request (``take``), the session's reservation, the ``running`` record and the ``Turn``, registered
        in ``active``; None when the turn was refused (the refusal is on its way to the loop)."""
        try:
            if launch.take is not None:
                launch.request, launch.release = launch.take()
                session_id = _session_id(launch.request)
                launch.watch = self._watch(session_id, launch.request, launch.transport, launch.traceparent)
                self._reserve(session_id)
                launch.session_id = session_id
            request, session_id = launch.request, launch.session_id
            assert request is not None and session_id is not None and launch.watch is not None
            session, server_newer, turn_number = self.runner.begin(request, session_id, launch.watch)
            first_seq = self.eventlog.last_seq(session_id)
        except BaseException as exc:  # noqa: BLE001 - a refusal of any kind is reported to the door that waits
            self._post(launch, self._on_refused, launch, exc)
            return None
        io = self._io(launch, session_id, turn_number, first_seq)
        turn = Turn(
            session_id,
            turn_number,
            request.owner,
            request.prompt,
            io,
            launch.done,
            input_id=request.input_id,
            watch=launch.watch,
        )
        with self._active_lock:
            self.active[session_id] = turn  # (over this launch's own reservation)
        launch.watch.started()
        return turn, request, session, server_newer

    def _io(self, launch: Launch, session_id: str, turn_number: int, first_seq: int) -> TurnIO:
        """The turn's IO: each event to the replay log, the activity log, the watch and (if watched) the hub."""
        loop, watch, agent_name = launch.loop, launch.watch, self.agent_name
        assert watch is not None

        def emit(event: dict[str, Any]) -> None:  # agent thread
            self.eventlog.append(session_id, int(event["id"]), turn_number, event)
            history.log_event(agent_name, session_id, event)
            watch.event(event)
            if self.hub.wants(session_id):  # (after the append: see Hub.wants)
                loop.call_soon_threadsafe(self.hub.publish, session_id, event)

        def on_pending(pending: PendingRequest | None) -> None:  # agent thread
            if pending is not None and pending.kind == "approval_needed":
                self.runner.checkpoint(session_id, "waiting_approval")
            elif pending is None:
                self.runner.checkpoint(session_id, "running")

        return TurnIO(
            session_id=session_id,
            first_seq=first_seq,
            emit=emit,
            interactive=launch.interactive,
            answer_timeout=self.config.answer_timeout,
            on_pending=on_pending,
        )

    def _execute(self, turn: Turn, request: TurnRequest, session: dict[str, Any], server_newer: bool) -> TurnResult:
        self.executing.add(turn)
        if turn.watch is not None:
            turn.watch.running()
        try:
            return self.runner.run(turn, request, session, server_newer)
        finally:
            self.executing.discard(turn)
            if turn.watch is not None:
                turn.watch.left_thread()

    def _watch(self, session_id: str, request: TurnRequest, transport: str, traceparent: str | None) -> TurnWatch:
        return TurnWatch(
            transport=transport,
            session_id=session_id,
            traceparent=traceparent,
            agent=self.agent_name,
            prompt=request.prompt,
        )

    @property
    def agent_name(self) -> str:
        return self.runner.agent_name

    # -- shutdown --------------------------------------------------------------------------------------
    def interrupt_remaining(self) -> int:
        """Shutdown after the grace period: record each turn still in an agent thread as ``interrupted``.

        The caller holds ``store.write_lock()`` and exits without waiting for those threads, so none of
        them can append a second terminal line after ours. Returns the number of records marked.
        """
        marked = 0
        for turn in list(self.executing):
            turn.io.cancelled.set()
            try:
                if self.store.get(turn.session_id, include_expired=True).status not in LIVE_STATUSES:
                    continue  # already ended (a turn past turn_timeout whose thread is still stuck)
                self.store.update(turn.session_id, status="interrupted", error="interrupted")
                marked += 1
            except (HostError, DoesNotExist):
                log.error("could not record %s as interrupted; the next start will", turn.session_id)
        return marked


def _session_id(request: TurnRequest) -> str:
    return request.session_id or (request.session or {}).get("session_id") or str(uuid.uuid4())


@metrics.safe
def _queued(change: int) -> None:
    """Turns handed to the agents pool and not yet picked up by a thread (``connectonion_pool_queued_turns``)."""
    metrics.pool_queued.inc(change)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a refusal as seen when nobody awaits it any more (the caller was cancelled)."""
    if not future.cancelled():
        future.exception()
