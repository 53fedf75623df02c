"""Optional OpenTelemetry traces: one span per turn, a child span per model call and per tool call, named
and attributed after the GenAI semantic conventions, parented on the client's W3C ``traceparent``.

Off unless ``start()`` (tracing configured) or ``use_provider()`` (tests) ran: then ``begin_turn`` returns
``None`` at the cost of one global read, and ``opentelemetry`` is never imported. Prompt, argument and result
text goes into attributes only when the operator opts in (``trace_content: true``).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

log = logging.getLogger("connectonion")
TRACER_NAME = "connectonion.host"
_tracer: Any = None
_content = False
_lock = threading.Lock()


def enabled() -> bool:
    return _tracer is not None


def start(*, endpoint: str | None, service_name: str, content: bool = False) -> bool:
    """Export spans over OTLP/HTTP (``requirements-otel.txt``). Returns False, with a warning, when the
    packages are missing: tracing is an extra, and a host without it still starts."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning("tracing is on but OpenTelemetry is not installed (pip install -r requirements-otel.txt): %s", exc)
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=_traces_url(endpoint)) if endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use_provider(provider, content=content)
    return True


def use_provider(provider: Any, *, content: bool = False) -> None:
    """Trace turns with this ``TracerProvider`` (``None`` turns tracing off again)."""
    global _tracer, _content
    with _lock:
        _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None
        _content = content


def _traces_url(endpoint: str) -> str:
    """host.yaml's ``otlp_endpoint`` names the collector like ``OTEL_EXPORTER_OTLP_ENDPOINT`` does (the
    exporter adds ``/v1/traces`` to that variable itself, not to an argument)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class TurnSpan:
    """The turn's span plus the open model/tool spans, keyed by the ids the agent's events carry."""

    def __init__(self, span: Any, context: Any) -> None:
        self.span = span
        self.context = context
        self.children: dict[tuple[str, str], Any] = {}
        self.lock = threading.Lock()


def begin_turn(*, session_id: str, transport: str, traceparent: Any, agent: str, prompt: str) -> TurnSpan | None:
    tracer = _tracer
    if tracer is None:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        parent = _parent_context(traceparent)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": session_id,
            "connectonion.transport": transport,
        }
        if _content:
            attributes["gen_ai.input.messages"] = json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}], ensure_ascii=False
            )
        span = tracer.start_span(f"invoke_agent {agent}", context=parent, kind=SpanKind.SERVER, attributes=attributes)
        return TurnSpan(span, trace.set_span_in_context(span))
    except Exception:
        log.exception("tracing: could not start a turn span")
        return None


def _parent_context(traceparent: Any) -> Any:
    """The client's context from a W3C ``traceparent`` (anything malformed starts a new trace)."""
    if not isinstance(traceparent, str) or not traceparent or len(traceparent) > 256:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def trace_id(turn: TurnSpan | None) -> str | None:
    if turn is None:
        return None
    context = turn.span.get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def span_id(turn: TurnSpan | None) -> str | None:
    if turn is None:
        return None
    context = turn.span.get_span_context()
    return f"{context.span_id:016x}" if context.is_valid else None


def on_event(turn: TurnSpan, event: dict[str, Any]) -> None:
    """``llm_call``/``llm_result`` and ``tool_call``/``tool_result`` pairs become child spans, timed by the
    events' own ``ts`` (seconds) so the spans show when the agent did the work, not when we saw it."""
    kind = event.get("type")
    if kind not in ("llm_call", "llm_result", "tool_call", "tool_result"):
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tool = kind.startswith("tool")
    key = ("tool" if tool else "llm", str(event.get("tool_id") if tool else event.get("id")))
    stamp = _nanos(event.get("ts"))
    with turn.lock:
        if kind in ("llm_call", "tool_call"):
            if tool:
                name = str(event.get("name") or "unknown")
                attributes = {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "gen_ai.tool.call.id": key[1],
                }
                if _content:
                    attributes["gen_ai.tool.call.arguments"] = _text(event.get("args"))
                title = f"execute_tool {name}"
            else:
                model = str(event.get("model") or "unknown")
                attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
                title = f"chat {model}"
            turn.children[key] = _tracer.start_span(
                title,
                context=turn.context,
                kind=SpanKind.INTERNAL if tool else SpanKind.CLIENT,
                attributes=attributes,
                start_time=stamp,
            )
            return
        span = turn.children.pop(key, None)
    if span is None:
        return
    status = str(event.get("status") or "success")
    if tool:
        if _content and event.get("result") is not None:
            span.set_attribute("gen_ai.tool.call.result", _text(event.get("result")))
    else:
        usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
        for attribute, field in (
            ("gen_ai.usage.input_tokens", "input_tokens"),
            ("gen_ai.usage.output_tokens", "output_tokens"),
        ):
            if isinstance(usage.get(field), int):
                span.set_attribute(attribute, usage[field])
        if event.get("model"):
            span.set_attribute("gen_ai.response.model", str(event["model"]))
    if status not in ("success", "completed", "done"):
        span.set_status(Status(StatusCode.ERROR, status))
        span.set_attribute("error.type", status)
    span.end(end_time=stamp)


def end_turn(turn: TurnSpan | None, status: str) -> None:
    if turn is None:
        return
    from opentelemetry.trace import Status, StatusCode

    with turn.lock:
        left, turn.children = list(turn.children.values()), {}
    for child in left:  # a call the agent never reported finished (cancelled, timed out)
        child.set_status(Status(StatusCode.ERROR, "unfinished"))
        child.end()
    turn.span.set_attribute("connectonion.turn.status", status)
    if status != "done":
        turn.span.set_status(Status(StatusCode.ERROR, status))
        turn.span.set_attribute("error.type", status)
    turn.span.end()


def _nanos(ts: Any) -> int | None:
    if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 0:
        return int(ts * 1e9)
    return None


def _text(value: Any, limit: int = 4096) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:limit]
