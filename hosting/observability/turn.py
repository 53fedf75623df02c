"""One turn as the operator sees it: counted, timed, and (when tracing is on) a span with child spans for
the model and tool calls it reports.

``TurnManager`` creates a ``TurnWatch`` per turn and tells it four things: started, an event, running in an
agent thread, ended. Every method is exception-safe: observability never changes what a turn does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from common import metrics
from hosting.observability import logs, tracing


class TurnWatch:
    """Counters, histograms and the span of one turn (thread-safe: events arrive on the agent thread)."""

    def __init__(
        self, *, transport: str, session_id: str, traceparent: Any = None, agent: str = "agent", prompt: str = ""
    ) -> None:
        self.transport = metrics.transport_label(transport)
        self.session_id = session_id
        self.started_at = time.monotonic()
        self._first_event = False
        self._state = "new"  # new -> queued -> running -> ended
        self._lock = threading.Lock()
        self.span = tracing.begin_turn(
            session_id=session_id, transport=self.transport, traceparent=traceparent, agent=agent, prompt=prompt
        )

    @property
    def trace_id(self) -> str | None:
        return tracing.trace_id(self.span)

    def record_fields(self) -> dict[str, Any]:
        """Extra fields for the session record: the trace id, when there is a trace."""
        trace_id = self.trace_id
        return {"trace_id": trace_id} if trace_id else {}

    @metrics.safe
    def started(self) -> None:
        """The ``running`` record is written and the agent call is about to be queued."""
        metrics.turns_started.labels(self.transport).inc()
        with self._lock:
            self._state = "queued"
        metrics.pool_queued.inc()

    @metrics.safe
    def running(self) -> None:
        """An agent thread picked the turn up."""
        with self._lock:
            was, self._state = self._state, "running"
        if was == "queued":
            metrics.pool_queued.dec()
        metrics.turns_in_flight.inc()
        logs.bind(session_id=self.session_id, trace_id=self.trace_id, span_id=tracing.span_id(self.span))

    @metrics.safe
    def left_thread(self) -> None:
        logs.clear()
        metrics.turns_in_flight.dec()

    @metrics.safe
    def event(self, event: dict[str, Any]) -> None:
        """One streamed event (agent thread): the first one times the turn's first answer; the agent's own
        ``llm_result`` / ``tool_result`` events count model and tool calls."""
        if not self._first_event:
            self._first_event = True
            metrics.first_event_seconds.labels(self.transport).observe(time.monotonic() - self.started_at)
        kind = event.get("type")
        if kind == "tool_result":
            tool = metrics.tool_label(event.get("name"))
            _count_call(metrics.tool_calls, metrics.tool_seconds, tool, event, "timing_ms")
        elif kind == "llm_result":
            model = metrics.model_label(event.get("model"))
            _count_call(metrics.model_calls, metrics.model_seconds, model, event, "duration_ms")
            usage = event.get("usage")
            if isinstance(usage, dict):
                for kind_name, key in (("input", "input_tokens"), ("output", "output_tokens")):
                    count = _number(usage.get(key))
                    if count:
                        metrics.model_tokens.labels(model, kind_name).inc(count)
        if self.span is not None:
            tracing.on_event(self.span, event)

    @metrics.safe
    def ended(self, status: str) -> None:
        """The turn is over (``done``, ``failed``, ``cancelled``), whoever answered the client."""
        with self._lock:
            was, self._state = self._state, "ended"
        if was == "ended":
            return
        if was == "queued":  # never reached a thread (pool shut down)
            metrics.pool_queued.dec()
        if was != "new":
            metrics.turns_ended.labels(self.transport, status).inc()
            metrics.turn_seconds.labels(self.transport, status).observe(time.monotonic() - self.started_at)
        tracing.end_turn(self.span, status)

    def refused(self, error: BaseException) -> None:
        """The turn never started (busy session, someone else's session, shutting down)."""
        self.ended("refused")


def watch_turn(**kwargs: Any) -> TurnWatch | None:
    """A ``TurnWatch``, or ``None`` if even that failed (the turn goes on unobserved)."""
    try:
        return TurnWatch(**kwargs)
    except Exception:  # noqa: BLE001 - observing must never stop a turn
        metrics.log.exception("metrics: could not observe a turn")
        return None


def _count_call(calls: Any, seconds: Any, label: str, event: dict[str, Any], duration_key: str) -> None:
    """One tool or model call: its count by status, and its duration when the event has one (in ms)."""
    calls.labels(label, str(event.get("status") or "success")[:32]).inc()
    duration = _number(event.get(duration_key))
    if duration is not None:
        seconds.labels(label).observe(duration / 1000)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value >= 0 else None
