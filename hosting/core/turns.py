"""A turn: prompt in → events out → result stored. Written once; every transport calls it.

``TurnManager.start()`` (on the event loop) checks the session, writes the ``running`` record, and
submits the agent call to our bounded pool; the agent thread streams events through ``TurnIO`` and
stores the ``done``/``failed`` record itself, so no file I/O ever happens on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from common.errors import (
    AgentFailed,
    HostError,
    ModelUnavailable,
    RuntimeInputRejected,
    ServiceUnavailable,
    SessionBusy,
    SessionNotFound,
    TurnTimedOut,
)
from hosting.core import activity as history
from hosting.core import uploads
from hosting.core.agents import AgentSource, append_exchange
from hosting.core.config import HostConfig
from hosting.core.events import AnswerTimeout, Hub, PendingRequest, TurnInterrupted, TurnIO
from hosting.core.model_errors import model_unavailable_cause
from hosting.core.pools import Pools
from hosting.core.turndata import Turn, TurnRequest, TurnResult, one_line, output_fields
from hosting.observability.turn import TurnWatch
from sessions_app.eventlog import EventLog
from sessions_app.records import LIVE_STATUSES, DoesNotExist
from sessions_app.store import SessionStore
from sessions_app.transcript import merge_sessions, normalize_session

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
        self.active: dict[str, Turn] = {}
        self.executing: set[Turn] = set()  # turns inside an agent thread (shutdown waits for them)
        self.closing = False  # set on SIGTERM: new turns get 503 while running ones finish

    async def start(self, request: TurnRequest, *, interactive: bool,
                    release: Callable[[], None] | None = None, transport: str = "http",
                    traceparent: str | None = None) -> Turn:
        """Check the session, write the ``running`` record and launch the agent; returns at once.

        ``release`` (a concurrency slot of ``hosting.core.throttle``) is called once when the agent thread is
        done with the turn, or at once if the turn does not start.

        A caller cancelled meanwhile (Django cancels the view of an HTTP client that hung up) does not
        strand the ``running`` record being written: the turn still launches and ends like any other (FI8).
        ``transport`` (http, ws, relay) and the client's W3C ``traceparent`` are for metrics and traces only.
        """
        starting = asyncio.ensure_future(self._start(request, interactive=interactive, release=release,
                                                     transport=transport, traceparent=traceparent))
        starting.add_done_callback(_retrieve)
        return await asyncio.shield(starting)

    async def _start(self, request: TurnRequest, *, interactive: bool,
                     release: Callable[[], None] | None = None, transport: str = "http",
                     traceparent: str | None = None) -> Turn:
        loop = asyncio.get_running_loop()
        session_id = request.session_id or (request.session or {}).get("session_id") or str(uuid.uuid4())
        watch = TurnWatch(transport=transport, session_id=session_id, traceparent=traceparent,
                          agent=self.agent_name, prompt=request.prompt)
        try:
            if self.closing:
                raise ServiceUnavailable()
            if session_id in self.active:
                raise SessionBusy()
            self.active[session_id] = None  # type: ignore[assignment]  # reserve the id while we prepare
            try:
                await self.hub.turn_starting(session_id)  # before the record that tells other workers it runs here
                prepared = await self.pools.agents.run(self._prepare, request, session_id, watch)
            except BaseException:
                self.active.pop(session_id, None)
                self.hub.turn_not_started(session_id)
                raise
        except BaseException:
            if release is not None:
                release()
            watch.ended("refused")
            raise
        session, server_newer, turn_number, first_seq = prepared
        done: asyncio.Future[TurnResult] = loop.create_future()

        def emit(event: dict[str, Any]) -> None:  # agent thread
            self.eventlog.append(session_id, int(event["id"]), turn_number, event)
            history.log_event(self.agent_name, session_id, event)
            watch.event(event)
            if self.hub.wants(session_id):  # (after the append: see Hub.wants)
                loop.call_soon_threadsafe(self.hub.publish, session_id, event)

        def on_pending(pending: PendingRequest | None) -> None:  # agent thread
            if pending is not None and pending.kind == "approval_needed":
                self._checkpoint(session_id, "waiting_approval")
            elif pending is None:
                self._checkpoint(session_id, "running")

        io = TurnIO(
            session_id=session_id,
            first_seq=first_seq,
            emit=emit,
            interactive=interactive,
            answer_timeout=self.config.answer_timeout,
            on_pending=on_pending,
        )
        turn = Turn(session_id, turn_number, request.owner, request.prompt, io, done, input_id=request.input_id,
                    watch=watch)
        self.active[session_id] = turn
        watch.started()
        future = self.pools.agents.start(self._execute, turn, request, session, server_newer)
        watchdog = loop.call_later(self.config.turn_timeout, self._time_out, turn)

        def finished(f: asyncio.Future[TurnResult]) -> None:
            watchdog.cancel()
            if release is not None:
                release()  # the agent thread is free: so is the caller's slot (even after a timeout)
            if self.active.get(session_id) is turn:
                del self.active[session_id]
            if not done.done():
                if f.cancelled():
                    done.set_exception(AgentFailed())
                elif f.exception() is not None:
                    log.error("turn machinery failed", exc_info=f.exception())
                    done.set_result(self._failure_result(turn, session, AgentFailed()))
                else:
                    done.set_result(f.result())
            watch.ended(_final_status(f, done))

        future.add_done_callback(finished)
        return turn

    # -- agent thread ----------------------------------------------------------------------------------
    def _prepare(self, request: TurnRequest, session_id: str,
                 watch: TurnWatch) -> tuple[dict[str, Any], bool, int, int]:
        """Ownership, busy check, merge with the stored copy, the ``running`` record."""
        try:
            record = self.store.get(session_id)
        except DoesNotExist:
            record = None
        if record is not None:
            if record.owner != request.owner:
                raise SessionNotFound()
            if record.status in LIVE_STATUSES:  # its worker runs it, or the sweeper will soon say it died
                raise SessionBusy()
        stored_session = record.session if record is not None else None
        session, server_newer = merge_sessions(stored_session, request.session)
        previous_turn = session.get("turn") if isinstance(session.get("turn"), int) else 0
        session["session_id"] = session_id
        if request.owner:
            session["requester"] = {"address": request.owner, "level": request.level}
        else:
            session.pop("requester", None)
        traced = watch.record_fields()  # {"trace_id": ...} when tracing is on: record, trace and log line join
        self.store.create(session_id=session_id, prompt=request.prompt, owner=request.owner,
                          input_id=request.input_id, **traced)
        activity.info("[%s] input %s%s: %s", self.source.describe().name, session_id[:8],
                      f" (trace {traced['trace_id']})" if traced else "", one_line(request.prompt))
        first_seq = self.eventlog.last_seq(session_id)
        return session, server_newer, int(previous_turn or 0) + 1, first_seq

    def _execute(self, turn: Turn, request: TurnRequest, session: dict[str, Any], server_newer: bool) -> TurnResult:
        self.executing.add(turn)
        if turn.watch is not None:
            turn.watch.running()
        try:
            return self._run_turn(turn, request, session, server_newer)
        finally:
            self.executing.discard(turn)
            if turn.watch is not None:
                turn.watch.left_thread()

    def _run_turn(self, turn: Turn, request: TurnRequest, session: dict[str, Any], server_newer: bool) -> TurnResult:
        started = time.perf_counter()
        previous_turn = turn.number - 1
        try:
            session = dict(session)
            if request.files:
                saved = uploads.save_files(list(request.files), self.config.uploads_dir)
                session["messages"] = list(session.get("messages") or []) + [uploads.reminder_message(saved)]
                files = uploads.client_file_list(saved)
                turn.io.send({"type": "files_received", "files": files, "turn": turn.number})
                session.setdefault("trace", [])
                session["trace"] = list(session["trace"]) + [{"type": "files_received", "files": files}]
            images = [i.data_url for i in request.images]
            with self.source.checkout() as agent:
                if not agent.keeps_session:  # session-keeping agents report user_input themselves
                    turn.io.send({"type": "user_input", "content": request.prompt, "turn": turn.number})
                result_text, new_session = agent.run(request.prompt, session=session, images=images, io=turn.io)
            if turn.done.done():  # timed out meanwhile: the client already has its answer
                return self._failure_result(turn, session, TurnTimedOut())
            new_session = normalize_session(new_session, session_id=turn.session_id, previous_turn=previous_turn)
            if "requester" in session:
                new_session["requester"] = session["requester"]
            new_session["updated"] = time.time()
            duration = int((time.perf_counter() - started) * 1000)
            result = TurnResult(turn.session_id, "done", result_text, duration, new_session, server_newer,
                                input_id=turn.input_id)
            self.store.update(turn.session_id, status="done", result=result_text, duration_ms=duration,
                              session=new_session, prompt=request.prompt)
            activity.info("[%s] result %s (%d ms): %s", self.source.describe().name, turn.session_id[:8],
                          duration, one_line(result_text))
            self._write_history(turn.session_id, new_session)
            self._terminal(turn, {"type": "OUTPUT", **output_fields(result)})
            return result
        except TurnInterrupted as exc:
            return self._end_cancelled(turn, request, session, server_newer, exc.partial, started)
        except AnswerTimeout as exc:
            return self._end_badly(turn, session, AgentFailed(str(exc)), "failed", started)
        except HostError as exc:
            return self._end_badly(turn, session, exc, "failed", started)
        except Exception as exc:
            log.exception("agent raised in session %s", turn.session_id)
            activity.info("[%s] error %s: %s", self.source.describe().name, turn.session_id[:8], one_line(repr(exc)))
            cause = model_unavailable_cause(exc)
            error = ModelUnavailable(cause) if cause is not None else AgentFailed()
            return self._end_badly(turn, session, error, "failed", started)

    def _end_cancelled(self, turn: Turn, request: TurnRequest, session: dict[str, Any], server_newer: bool,
                       partial: str, started: float) -> TurnResult:
        """PROTOCOL D29: an interrupted turn ends like a finished one, with ``OUTPUT`` ``status: cancelled``, its
        partial result and the session (the prompt and that partial answer appended), so the conversation goes
        on from it; the record reads ``cancelled``."""
        duration = int((time.perf_counter() - started) * 1000)
        if turn.done.done():  # the watchdog already answered the client
            return self._failure_result(turn, session, TurnTimedOut())
        images = [i.data_url for i in request.images]
        new_session = normalize_session(append_exchange(session, request.prompt, partial, images),
                                        session_id=turn.session_id, previous_turn=turn.number - 1)
        new_session["updated"] = time.time()
        result = TurnResult(turn.session_id, "cancelled", partial, duration, new_session, server_newer,
                            input_id=turn.input_id)
        try:
            self.store.update(turn.session_id, status="cancelled", result=partial, duration_ms=duration,
                              session=new_session, prompt=request.prompt)
        except (HostError, DoesNotExist):
            log.error("could not store the cancelled record of %s", turn.session_id)
        activity.info("[%s] cancelled %s (%d ms)", self.source.describe().name, turn.session_id[:8], duration)
        self._write_history(turn.session_id, new_session)
        self._terminal(turn, {"type": "OUTPUT", "status": "cancelled", **output_fields(result)})
        return result

    def _end_badly(self, turn: Turn, session: dict[str, Any], error: HostError, status: str,
                   started: float) -> TurnResult:
        """Store and send the public message only: the exception's own text went to the log (issue 15.11)."""
        duration = int((time.perf_counter() - started) * 1000)
        if turn.done.done():  # the watchdog already answered the client
            return self._failure_result(turn, session, error)
        try:
            self.store.update(turn.session_id, status=status, error=error.message, duration_ms=duration)
        except HostError:
            log.error("could not store the %s record of %s", status, turn.session_id)
        self._terminal(turn, error.as_frame(session_id=turn.session_id, **(
            {"input_id": turn.input_id} if turn.input_id else {})))
        result = self._failure_result(turn, session, error)
        result.duration_ms = duration
        result.status = status
        return result

    def _failure_result(self, turn: Turn, session: dict[str, Any], error: HostError) -> TurnResult:
        return TurnResult(turn.session_id, "failed", None, 0, session, error=error, input_id=turn.input_id)

    def _terminal(self, turn: Turn, frame: dict[str, Any]) -> None:
        """Log and publish the terminal frame like any event, so resume replays it too.

        The turn leaves ``active`` first, on the loop, ahead of the frame's delivery (callbacks run in order):
        a client that answers ``OUTPUT`` with its next ``INPUT`` at once must find the session free.
        """
        turn.io.close_runtime_inputs()  # nothing is accepted that the agent can no longer read
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown)
            turn.done.get_loop().call_soon_threadsafe(self._release, turn)
        try:
            turn.io.publish(frame)
        except Exception:
            log.exception("could not publish the terminal frame of %s", turn.session_id)

    @property
    def agent_name(self) -> str:
        return self.config.name or self.source.describe().name

    def _write_history(self, session_id: str, session: dict[str, Any]) -> None:
        """``.co/sessions/<id>.yaml``: the conversation so far (a failure is logged, never raised)."""
        try:
            try:
                created = self.store.get(session_id).created
            except DoesNotExist:
                created = None
            history.write_session_yaml(self.config.co_dir / "sessions", name=self.agent_name,
                                       session_id=session_id, session=session, created=created)
        except (OSError, ValueError, TypeError):
            log.exception("could not write the history of %s", session_id)

    def _checkpoint(self, session_id: str, status: str) -> None:
        try:
            self.store.update(session_id, status=status)
        except (HostError, DoesNotExist):
            log.warning("could not checkpoint %s as %s", session_id, status)

    # -- loop ------------------------------------------------------------------------------------------
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
        if self.active.get(turn.session_id) is turn:
            del self.active[turn.session_id]

    def _time_out(self, turn: Turn) -> None:
        """The agent overran ``turn_timeout``: answer the client now; the thread stops at its next step."""
        if turn.done.done() or self.active.get(turn.session_id) is not turn:
            return  # finished (its terminal frame is on its way)
        turn.io.cancelled.set()
        error = TurnTimedOut()
        self.pools.bookkeeping.submit(self._store_timeout, turn, error)  # not behind the stuck agents
        turn.done.set_result(self._failure_result(turn, {}, error))
        if self.active.get(turn.session_id) is turn:
            del self.active[turn.session_id]

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

    def _store_timeout(self, turn: Turn, error: HostError) -> None:
        try:
            self.store.update(turn.session_id, status="failed", error=error.message)
        except (HostError, DoesNotExist):
            log.error("could not store the timeout of %s", turn.session_id)
        self._terminal(turn, error.as_frame(session_id=turn.session_id))


def _final_status(future: asyncio.Future[TurnResult], done: asyncio.Future[TurnResult]) -> str:
    """The status the turn ended with, for metrics: the agent's result, or what the client was told."""
    if not future.cancelled() and future.exception() is None:
        return future.result().status
    if done.done() and not done.cancelled() and done.exception() is None:
        return done.result().status
    return "failed"


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a start-up error as seen when nobody awaits it any more (the caller was cancelled)."""
    if not task.cancelled():
        task.exception()
