"""OpenTelemetry traces in process, with the SDK's in-memory exporter: the span tree of a tool-using turn and its
GenAI attributes; a client's ``traceparent`` (HTTP header, WS INPUT field, relayed INPUT field) becomes the
turn's parent; the trace id joins span, session record and activity log line; no prompt, argument or result
text in attributes unless the operator opts in."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from connectonion_site.asgi import application
from hosting.conversation.protocol import Conversation
from hosting.core import activity
from hosting.core.runtime import get_runtime
from hosting.observability import tracing

pytestmark = pytest.mark.django_db(transaction=True)
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
CANARY = "canary-prompt-text-91c2"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


@pytest.fixture
def content_spans(spans):
    tracing.use_provider(trace_provider(spans), content=True)
    return spans


def trace_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def post_input(prompt: str, **headers: str) -> dict:
    reply = Client(REMOTE_ADDR="127.0.0.1").post(
        "/input", data=json.dumps({"prompt": prompt}), content_type="application/json", **headers
    )
    assert reply.status_code == 200, reply.content
    return reply.json()


def turn_spans(exporter: InMemorySpanExporter) -> tuple[object, list]:
    # The turn's span ends just after its OUTPUT is on the wire (it covers the send): wait for it, bounded.
    deadline = time.monotonic() + 10
    while True:
        finished = exporter.get_finished_spans()
        roots = [s for s in finished if s.name.startswith("invoke_agent ")]
        if roots or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert len(roots) == 1, [s.name for s in finished]
    root = roots[0]
    children = [s for s in finished if s is not root]
    return root, children


def all_attribute_text(exporter: InMemorySpanExporter) -> str:
    return json.dumps([dict(s.attributes) for s in exporter.get_finished_spans()], default=str)


def test_a_tool_using_turn_is_one_agent_span_with_model_and_tool_children(spans):
    body = post_input("calculate (2+3)*7")
    root, children = turn_spans(spans)
    agent = get_runtime().turns.agent_name
    assert root.name == f"invoke_agent {agent}" and root.kind == SpanKind.SERVER
    assert root.parent is None
    assert dict(root.attributes) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent,
        "gen_ai.conversation.id": body["session_id"],
        "connectonion.transport": "http",
        "connectonion.turn.status": "done",
    }
    assert sorted(s.name for s in children) == ["chat demo/rules", "chat demo/rules", "execute_tool calculate"]
    for child in children:
        assert child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    tool = next(s for s in children if s.name == "execute_tool calculate")
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "calculate"
    assert tool.attributes["gen_ai.tool.call.id"].startswith("call_")
    assert tool.status.status_code == StatusCode.UNSET
    for chat in (s for s in children if s.name.startswith("chat ")):
        assert chat.kind == SpanKind.CLIENT
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "demo/rules"


def test_the_trace_id_joins_span_record_and_activity_log(spans):
    body = post_input("calculate 6*7")
    root, _ = turn_spans(spans)
    trace_id = f"{root.context.trace_id:032x}"
    record = Client(REMOTE_ADDR="127.0.0.1").get(f"/sessions/{body['session_id']}").json()
    assert record["trace_id"] == trace_id
    runtime = get_runtime()
    log_file = activity.log_path(runtime.config.logs_dir, runtime.turns.agent_name)
    line = next(x for x in log_file.read_text().splitlines() if f"input {body['session_id'][:8]}" in x)
    assert f"(trace {trace_id})" in line


def test_an_http_traceparent_header_becomes_the_parent(spans):
    post_input("calculate 1+1", HTTP_TRACEPARENT=TRACEPARENT)
    root, children = turn_spans(spans)
    assert f"{root.context.trace_id:032x}" == CLIENT_TRACE
    assert f"{root.parent.span_id:016x}" == CLIENT_SPAN and root.parent.is_remote
    assert all(f"{c.context.trace_id:032x}" == CLIENT_TRACE for c in children)


@pytest.mark.parametrize("traceparent", ["garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", 42])
def test_a_malformed_traceparent_starts_a_new_trace(spans, traceparent):
    frame = {"type": "INPUT", "prompt": "calculate 2+2", "traceparent": traceparent}
    comm_frames = asyncio.run(_ws_turn(frame, spans))
    assert comm_frames[-1]["type"] == "OUTPUT"
    root, _ = turn_spans(spans)
    assert root.parent is None and root.context.is_valid


async def turn_span_ended(exporter: InMemorySpanExporter) -> None:
    """The turn's span ends in a done-callback on the loop after the OUTPUT is sent (the turn has already
    left ``active`` by then): keep the loop running until the span is exported, bounded, or asyncio.run
    closes the loop first and the span never ends."""
    for _ in range(2000):
        if any(s.name.startswith("invoke_agent ") for s in exporter.get_finished_spans()):
            return
        await asyncio.sleep(0.005)


async def _ws_turn(frame: dict, exporter: InMemorySpanExporter) -> list[dict]:
    comm = WebsocketCommunicator(application, "/ws")
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to(frame)
    frames = []
    while not frames or frames[-1]["type"] not in ("OUTPUT", "ERROR"):
        got = json.loads(await comm.receive_from(timeout=10))
        if got["type"] != "PING":
            frames.append(got)
    await comm.disconnect()
    await turn_span_ended(exporter)
    return frames


def test_a_ws_input_traceparent_field_becomes_the_parent(spans):
    frame = {"type": "INPUT", "prompt": "calculate 3*3", "traceparent": TRACEPARENT}
    frames = asyncio.run(_ws_turn(frame, spans))
    assert frames[-1]["type"] == "OUTPUT"
    root, _ = turn_spans(spans)
    assert f"{root.context.trace_id:032x}" == CLIENT_TRACE and f"{root.parent.span_id:016x}" == CLIENT_SPAN
    assert root.attributes["connectonion.transport"] == "ws"


def test_a_relayed_input_traceparent_field_becomes_the_parent(spans):
    """The relay link hands relayed frames to the same ``Conversation`` (transport ``relay``)."""

    async def relayed() -> list[dict]:
        sent: list[dict] = []

        async def send(frame: dict) -> None:
            sent.append(frame)

        conversation = Conversation(runtime=get_runtime(), send=send, transport="relay")
        await conversation.handle({"type": "INPUT", "prompt": "calculate 4*4", "traceparent": TRACEPARENT})
        while not sent or sent[-1]["type"] not in ("OUTPUT", "ERROR"):
            await asyncio.sleep(0.01)
        await conversation.close()
        await turn_span_ended(spans)
        return sent

    assert asyncio.run(asyncio.wait_for(relayed(), 20))[-1]["type"] == "OUTPUT"
    root, _ = turn_spans(spans)
    assert f"{root.context.trace_id:032x}" == CLIENT_TRACE and f"{root.parent.span_id:016x}" == CLIENT_SPAN
    assert root.attributes["connectonion.transport"] == "relay"


def test_no_prompt_or_tool_text_in_attributes_by_default(spans):
    post_input(f"calculate (2+3)*7 {CANARY}")
    text = all_attribute_text(spans)
    assert CANARY not in text and "(2+3)*7" not in text  # the prompt, and the answer "(2+3)*7 = 35"
    # The tool's result is "35": looked for as a whole value (as a substring it matched random hex ids).
    assert "35" not in [v for s in spans.get_finished_spans() for v in s.attributes.values()]
    runtime = get_runtime()
    for secret in (runtime.config.secret_key, bytes(runtime.identity.signing_key).hex()):
        assert secret not in text


def test_the_operator_may_opt_in_to_prompt_and_tool_text(content_spans):
    post_input(f"calculate (2+3)*7 {CANARY}")
    root, children = turn_spans(content_spans)
    assert CANARY in root.attributes["gen_ai.input.messages"]
    tool = next(s for s in children if s.name == "execute_tool calculate")
    assert "(2+3)*7" in tool.attributes["gen_ai.tool.call.arguments"]
    assert tool.attributes["gen_ai.tool.call.result"] == "35"
