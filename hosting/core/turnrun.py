"""The agent thread's part of a turn: its ``running`` record (``begin``), the agent call, then the one terminal
record (``done``, ``cancelled`` or ``failed``), the history file and the terminal frame, in that order, so a turn is
durable before anyone sees its answer. ``hosting.core.turns.TurnManager`` runs it inside the turn's one pool task.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from common.errors import AgentFailed, HostError, ModelUnavailable, SessionBusy, SessionNotFound, TurnTimedOut
from hosting.core import activity as history
from hosting.core import uploads
from hosting.core.agents import AgentSource, append_exchange
from hosting.core.config import HostConfig
from hosting.core.events import AnswerTimeout, TurnInterrupted
from hosting.core.model_errors import model_unavailable_cause
from hosting.core.turndata import Turn, TurnRequest, TurnResult, one_line, output_fields
from hosting.observability import logs
from hosting.observability.turn import TurnWatch
from sessions_app.records import LIVE_STATUSES, DoesNotExist, SessionRecord
from sessions_app.store import SessionStore
from sessions_app.transcript import merge_sessions, normalize_session

log = logging.getLogger("connectonion.turns")
activity = logging.getLogger("connectonion.activity")


class TurnRunner:
    """Runs the agent of a turn and ends the turn (agent thread; ``store_timeout`` runs on the bookkeeping pool).

    ``on_terminal`` is the turn manager's loop-side release of the session, scheduled ahead of the terminal
    frame so a client that answers ``OUTPUT`` with its next ``INPUT`` at once finds the session free.
    """

    def __init__(
        self, *, config: HostConfig, source: AgentSource, store: SessionStore, on_terminal: Callable[[Turn], None]
    ) -> None:
        self.config = config
        self.source = source
        self.store = store
        self.on_terminal = on_terminal

    @property
    def agent_name(self) -> str:
        return self.config.name or self.source.describe().name  # (describe() builds the agent once, lazily)

    def begin(self, request: TurnRequest, session_id: str, watch: TurnWatch) -> tuple[dict[str, Any], bool, int]:
        """The turn's start: ownership, busy check, merge with the stored copy, the ``running`` record; the merged
        session, whether the server's copy was newer, and the turn's number."""
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
        self.store.create(
            session_id=session_id, prompt=request.prompt, owner=request.owner, input_id=request.input_id, **traced
        )
        activity.info(
            "[%s] input %s%s: %s",
            self.source.describe().name,
            session_id[:8],
            f" (trace {traced['trace_id']})" if traced else "",
            one_line(request.prompt),
            extra=logs.turn_ids(session_id=session_id, **traced),
        )
        return session, server_newer, int(previous_turn or 0) + 1

    def run(self, turn: Turn, request: TurnRequest, session: dict[str, Any], server_newer: bool) -> TurnResult:
        """The agent call and the terminal record; every failure ends as a result (never raised)."""
        started = time.perf_counter()
        try:
            session = self._with_files(turn, request, dict(session))
            images = [i.data_url for i in request.images]
            with self.source.checkout() as agent:
                if not agent.keeps_session:  # session-keeping agents report user_input themselves
                    turn.io.send({"type": "user_input", "content": request.prompt, "turn": turn.number})
                result_text, new_session = agent.run(request.prompt, session=session, images=images, io=turn.io)
            if turn.done.done():  # timed out meanwhile: the client already has its answer
                return self.failure_result(turn, session, TurnTimedOut())
            return self._end_done(turn, request, session, server_newer, result_text, new_session, started)
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

    def _with_files(self, turn: Turn, request: TurnRequest, session: dict[str, Any]) -> dict[str, Any]:
        """Save the turn's files and tell the agent and the client about them (the session gets a reminder)."""
        if not request.files:
            return session
        saved = uploads.save_files(list(request.files), self.config.uploads_dir)
        session["messages"] = [*(session.get("messages") or []), uploads.reminder_message(saved)]
        files = uploads.client_file_list(saved)
        turn.io.send({"type": "files_received", "files": files, "turn": turn.number})
        session.setdefault("trace", [])
        session["trace"] = [*session["trace"], {"type": "files_received", "files": files}]
        return session

    def _end_done(
        self,
        turn: Turn,
        request: TurnRequest,
        session: dict[str, Any],
        server_newer: bool,
        result_text: str,
        new_session: dict[str, Any],
        started: float,
    ) -> TurnResult:
        new_session = normalize_session(new_session, session_id=turn.session_id, previous_turn=turn.number - 1)
        if "requester" in session:
            new_session["requester"] = session["requester"]
        new_session["updated"] = time.time()
        duration = int((time.perf_counter() - started) * 1000)
        result = TurnResult(
            turn.session_id, "done", result_text, duration, new_session, server_newer, input_id=turn.input_id
        )
        record = self._store_end(result, request.prompt)
        activity.info(
            "[%s] result %s (%d ms): %s",
            self.source.describe().name,
            turn.session_id[:8],
            duration,
            one_line(result_text),
        )
        self.write_history(turn.session_id, new_session, created=record.created)
        self.terminal(turn, {"type": "OUTPUT", **output_fields(result)})
        return result

    def _store_end(self, result: TurnResult, prompt: str) -> SessionRecord:
        """The turn's terminal record, from its result (``done`` or ``cancelled``)."""
        return self.store.update(
            result.session_id,
            status=result.status,
            result=result.result,
            duration_ms=result.duration_ms,
            session=result.session,
            prompt=prompt,
        )

    def _end_cancelled(
        self,
        turn: Turn,
        request: TurnRequest,
        session: dict[str, Any],
        server_newer: bool,
        partial: str,
        started: float,
    ) -> TurnResult:
        """PROTOCOL D29: an interrupted turn ends like a finished one, with ``OUTPUT`` ``status: cancelled``, its
        partial result and the session (the prompt and that partial answer appended), so the conversation goes
        on from it; the record reads ``cancelled``."""
        duration = int((time.perf_counter() - started) * 1000)
        if turn.done.done():  # the watchdog already answered the client
            return self.failure_result(turn, session, TurnTimedOut())
        images = [i.data_url for i in request.images]
        new_session = normalize_session(
            append_exchange(session, request.prompt, partial, images),
            session_id=turn.session_id,
            previous_turn=turn.number - 1,
        )
        new_session["updated"] = time.time()
        result = TurnResult(
            turn.session_id, "cancelled", partial, duration, new_session, server_newer, input_id=turn.input_id
        )
        created = None  # (the history looks it up when the record could not be stored)
        try:
            created = self._store_end(result, request.prompt).created
        except (HostError, DoesNotExist):
            log.error("could not store the cancelled record of %s", turn.session_id)
        activity.info("[%s] cancelled %s (%d ms)", self.source.describe().name, turn.session_id[:8], duration)
        self.write_history(turn.session_id, new_session, created=created)
        self.terminal(turn, {"type": "OUTPUT", "status": "cancelled", **output_fields(result)})
        return result

    def _end_badly(
        self, turn: Turn, session: dict[str, Any], error: HostError, status: str, started: float
    ) -> TurnResult:
        """Store and send the public message only: the exception's own text went to the log (issue 15.11)."""
        duration = int((time.perf_counter() - started) * 1000)
        if turn.done.done():  # the watchdog already answered the client
            return self.failure_result(turn, session, error)
        try:
            self.store.update(turn.session_id, status=status, error=error.message, duration_ms=duration)
        except HostError:
            log.error("could not store the %s record of %s", status, turn.session_id)
        self.terminal(
            turn, error.as_frame(session_id=turn.session_id, **({"input_id": turn.input_id} if turn.input_id else {}))
        )
        result = self.failure_result(turn, session, error)
        result.duration_ms = duration
        result.status = status
        return result

    def failure_result(self, turn: Turn, session: dict[str, Any], error: HostError) -> TurnResult:
        return TurnResult(turn.session_id, "failed", None, 0, session, error=error, input_id=turn.input_id)

    def terminal(self, turn: Turn, frame: dict[str, Any]) -> None:
        """Log and publish the terminal frame like any event, so resume replays it too.

        The turn leaves ``active`` first, on the loop, ahead of the frame's delivery (callbacks run in order):
        a client that answers ``OUTPUT`` with its next ``INPUT`` at once must find the session free.
        """
        turn.io.close_runtime_inputs()  # nothing is accepted that the agent can no longer read
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown)
            turn.done.get_loop().call_soon_threadsafe(self.on_terminal, turn)
        try:
            turn.io.publish(frame)
        except Exception:
            log.exception("could not publish the terminal frame of %s", turn.session_id)

    def write_history(self, session_id: str, session: dict[str, Any], *, created: float | None = None) -> None:
        """``.co/sessions/<id>.yaml``: the conversation so far (a failure is logged, never raised). ``created``:
        the session's first turn, from the record just stored when the caller has it (else looked up)."""
        try:
            if created is None:
                try:
                    created = self.store.get(session_id).created
                except DoesNotExist:
                    created = None
            history.write_session_yaml(
                self.config.co_dir / "sessions",
                name=self.agent_name,
                session_id=session_id,
                session=session,
                created=created,
            )
        except (OSError, ValueError, TypeError):
            log.exception("could not write the history of %s", session_id)

    def checkpoint(self, session_id: str, status: str) -> None:
        """The live record's status while the agent waits on its client (``waiting_approval``) and after."""
        try:
            self.store.update(session_id, status=status)
        except (HostError, DoesNotExist):
            log.warning("could not checkpoint %s as %s", session_id, status)

    def store_timeout(self, turn: Turn, error: HostError) -> None:
        """The record and frame of a turn past ``turn_timeout`` (bookkeeping pool: not behind stuck agents)."""
        try:
            self.store.update(turn.session_id, status="failed", error=error.message)
        except (HostError, DoesNotExist):
            log.error("could not store the timeout of %s", turn.session_id)
        self.terminal(turn, error.as_frame(session_id=turn.session_id))
