"""A turn: prompt in → events out → result stored. Written once; every transport calls it.

``TurnManager.start()`` (on the event loop) checks the session, writes the ``running`` record, and
submits the agent call to our bounded pool; the agent thread streams events through ``TurnIO`` and
stores the ``done``/``failed`` record itself, so no file I/O ever happens on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hosting import activity as history
from hosting import uploads
from hosting.agents import AgentSource
from hosting.config import HostConfig
from hosting.errors import (
    AgentFailed,
    HostError,
    ServiceUnavailable,
    SessionBusy,
    SessionNotFound,
    TurnCancelled,
    TurnTimedOut,
)
from hosting.events import AnswerTimeout, Hub, PendingRequest, TurnInterrupted, TurnIO
from sessions_app.eventlog import EventLog
from sessions_app.records import chat_items, merge_sessions, normalize_session
from sessions_app.store import LIVE_STATUSES, DoesNotExist, SessionStore

T = TypeVar("T")
log = logging.getLogger("connectonion.turns")
activity = logging.getLogger("connectonion.activity")


@dataclass(frozen=True)
class TurnRequest:
    """Everything a transport read from the client, already validated and admitted."""

    prompt: str
    session: dict[str, Any] | None = None
    session_id: str | None = None
    images: tuple[uploads.ImageInput, ...] = ()
    files: tuple[uploads.FileInput, ...] = ()
    input_id: str | None = None
    owner: str | None = None
    level: str = "stranger"


@dataclass
class TurnResult:
    session_id: str
    status: str
    result: str | None
    duration_ms: int
    session: dict[str, Any]
    server_newer: bool = False
    error: HostError | None = None
    input_id: str | None = None

    def as_response(self) -> dict[str, Any]:
        """The ``POST /input`` body and the core of the ``OUTPUT`` frame."""
        return {
            "session_id": self.session_id,
            "status": self.status,
            "result": self.result,
            "duration_ms": self.duration_ms,
            "session": self.session,
            "chat_items": chat_items(self.session),
            "server_newer": self.server_newer,
        }


@dataclass(eq=False)  # identity: turns go in sets
class Turn:
    """A running turn, as the loop sees it."""

    session_id: str
    number: int
    owner: str | None
    prompt: str
    io: TurnIO
    done: asyncio.Future[TurnResult]
    started: float = field(default_factory=time.monotonic)
    input_id: str | None = None

    @property
    def pending(self) -> PendingRequest | None:
        return self.io.pending

    def cancel(self) -> None:
        self.io.deliver({"type": "INTERRUPT"})


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
        pool: ThreadPoolExecutor,
    ) -> None:
        self.config = config
        self.source = source
        self.store = store
        self.eventlog = eventlog
        self.hub = hub
        self.pool = pool
        self.active: dict[str, Turn] = {}
        self.executing: set[Turn] = set()  # turns inside an agent thread (shutdown waits for them)
        self.closing = False  # set on SIGTERM: new turns get 503 while running ones finish

    async def offload(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking work that precedes a turn (admission) on the turn pool: one plain hand-off, without
        asgiref's per-call context copying; a turn needs a pool thread next anyway."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def run(self, request: TurnRequest, *, interactive: bool = False,
                  release: Callable[[], None] | None = None) -> TurnResult:
        """Start a turn and wait for its result (HTTP). Raises the turn's error, if any."""
        turn = await self.start(request, interactive=interactive, release=release)
        result = await asyncio.shield(turn.done)
        if result.error is not None:
            raise result.error
        return result

    async def start(self, request: TurnRequest, *, interactive: bool,
                    release: Callable[[], None] | None = None) -> Turn:
        """Check the session, write the ``running`` record and launch the agent; returns at once.

        ``release`` (a concurrency slot of ``hosting.throttle``) is called once when the agent thread is
        done with the turn, or at once if the turn does not start.

        A caller cancelled meanwhile (Django cancels the view of an HTTP client that hung up) does not
        strand the ``running`` record being written: the turn still launches and ends like any other (FI8).
        """
        starting = asyncio.ensure_future(self._start(request, interactive=interactive, release=release))
        starting.add_done_callback(_retrieve)
        return await asyncio.shield(starting)

    async def _start(self, request: TurnRequest, *, interactive: bool,
                     release: Callable[[], None] | None = None) -> Turn:
        loop = asyncio.get_running_loop()
        session_id = request.session_id or (request.session or {}).get("session_id") or str(uuid.uuid4())
        try:
            if self.closing:
                raise ServiceUnavailable()
            if session_id in self.active:
                raise SessionBusy()
            self.active[session_id] = None  # type: ignore[assignment]  # reserve the id while we prepare
            try:
                prepared = await loop.run_in_executor(self.pool, self._prepare, request, session_id)
            except BaseException:
                self.active.pop(session_id, None)
                raise
        except BaseException:
            if release is not None:
                release()
            raise
        session, server_newer, turn_number, first_seq = prepared
        done: asyncio.Future[TurnResult] = loop.create_future()

        def emit(event: dict[str, Any]) -> None:  # agent thread
            self.eventlog.append(session_id, int(event["id"]), turn_number, event)
            history.log_event(self.agent_name, session_id, event)
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
        turn = Turn(session_id, turn_number, request.owner, request.prompt, io, done, input_id=request.input_id)
        self.active[session_id] = turn
        future = loop.run_in_executor(self.pool, self._execute, turn, request, session, server_newer)
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

        future.add_done_callback(finished)
        return turn

    # -- agent thread ----------------------------------------------------------------------------------
    def _prepare(self, request: TurnRequest, session_id: str) -> tuple[dict[str, Any], bool, int, int]:
        """Ownership, busy check, merge with the stored copy, the ``running`` record."""
        try:
            record = self.store.get(session_id)
        except DoesNotExist:
            record = None
        if record is not None:
            if record.owner != request.owner:
                raise SessionNotFound()
            if record.status in LIVE_STATUSES and record.pid is not None:
                raise SessionBusy()
        stored_session = record.session if record is not None else None
        session, server_newer = merge_sessions(stored_session, request.session)
        previous_turn = session.get("turn") if isinstance(session.get("turn"), int) else 0
        session["session_id"] = session_id
        if request.owner:
            session["requester"] = {"address": request.owner, "level": request.level}
        else:
            session.pop("requester", None)
        self.store.create(session_id=session_id, prompt=request.prompt, owner=request.owner,
                          input_id=request.input_id)
        activity.info("[%s] input %s: %s", self.source.describe().name, session_id[:8], _one_line(request.prompt))
        first_seq = self.eventlog.last_seq(session_id)
        return session, server_newer, int(previous_turn or 0) + 1, first_seq

    def _execute(self, turn: Turn, request: TurnRequest, session: dict[str, Any], server_newer: bool) -> TurnResult:
        self.executing.add(turn)
        try:
            return self._run_turn(turn, request, session, server_newer)
        finally:
            self.executing.discard(turn)

    def _run_turn(self, turn: Turn, request: TurnRequest, session: dict[str, Any], server_newer: bool) -> TurnResult:
        started = time.perf_counter()
        previous_turn = turn.number - 1
        try:
            session = dict(session)
            if request.files:
                saved = uploads.save_files(list(request.files), self.config.uploads_dir)
                session["messages"] = list(session.get("messages") or []) + [uploads.reminder_message(saved)]
                files = [{"name": s.name, "path": str(s.path)} for s in saved]
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
                          duration, _one_line(result_text))
            self._write_history(turn.session_id, new_session)
            self._terminal(turn, {"type": "OUTPUT", **_output_fields(result)})
            return result
        except TurnInterrupted:
            return self._end_badly(turn, session, TurnCancelled(), "cancelled", started)
        except AnswerTimeout as exc:
            return self._end_badly(turn, session, AgentFailed(str(exc)), "failed", started)
        except HostError as exc:
            return self._end_badly(turn, session, exc, "failed", started)
        except Exception as exc:
            log.exception("agent raised in session %s", turn.session_id)
            activity.info("[%s] error %s: %s", self.source.describe().name, turn.session_id[:8], _one_line(repr(exc)))
            return self._end_badly(turn, session, AgentFailed(), "failed", started, detail=repr(exc))

    def _end_badly(self, turn: Turn, session: dict[str, Any], error: HostError, status: str, started: float,
                   detail: str | None = None) -> TurnResult:
        duration = int((time.perf_counter() - started) * 1000)
        if turn.done.done():  # the watchdog already answered the client
            return self._failure_result(turn, session, error)
        try:
            self.store.update(turn.session_id, status=status, error=detail or error.message, duration_ms=duration)
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
    def _release(self, turn: Turn) -> None:
        if self.active.get(turn.session_id) is turn:
            del self.active[turn.session_id]

    def _time_out(self, turn: Turn) -> None:
        """The agent overran ``turn_timeout``: answer the client now; the thread stops at its next step."""
        if turn.done.done() or self.active.get(turn.session_id) is not turn:
            return  # finished (its terminal frame is on its way)
        turn.io.cancelled.set()
        error = TurnTimedOut()
        self.pool.submit(self._store_timeout, turn, error)
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


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a start-up error as seen when nobody awaits it any more (the caller was cancelled)."""
    if not task.cancelled():
        task.exception()


def _output_fields(result: TurnResult) -> dict[str, Any]:
    fields = {"result": result.result, "session_id": result.session_id, "duration_ms": result.duration_ms,
              "session": result.session, "chat_items": chat_items(result.session)}
    if result.server_newer:
        fields["server_newer"] = True
    if result.input_id:
        fields["input_id"] = result.input_id
    return fields


def _one_line(text: str, limit: int = 200) -> str:
    """Log-safe: control characters escaped, so a prompt cannot forge log lines (HARDENING H15)."""
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    return escaped + ("…" if len(text) > limit else "")
