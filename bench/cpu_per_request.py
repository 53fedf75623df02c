"""CPU time per ``POST /input``, in process: the ASGI app driven directly (no server, no sockets).

    .venv/bin/python bench/cpu_per_request.py                 # 2,000 signed instant turns, 8 at a time
    .venv/bin/python bench/cpu_per_request.py --phases        # + CPU per request of each stage (thread time)
    .venv/bin/python bench/cpu_per_request.py --path /health --method GET
    .venv/bin/python bench/cpu_per_request.py --tracing       # + OpenTelemetry spans (batch, in-memory export)
    .venv/bin/python bench/cpu_per_request.py --postgres postgres://postgres@127.0.0.1/bench   # store: postgres

Process CPU divided by requests is steadier than req/s on a shared, noisy machine, so this is the figure used
to judge a change to the request path; ``run.py`` then measures the whole server against the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import importlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# (module, class or None, function): the stages of a turn, timed with thread CPU time when --phases is given.
STAGES = [
    ("hosting.core.messages", None, "read_input"),
    ("trust.gate", "Gate", "admit"),
    ("trust.ledger", "DatabaseLedger", "_insert"),
    ("hosting.core.turns", "TurnManager", "_task"),
    ("hosting.core.turns", "TurnManager", "_open"),
    ("hosting.core.turns", "TurnManager", "_execute"),
    ("hosting.core.agents", "TurnAgent", "run"),
    ("hosting.core.turnrun", "TurnRunner", "begin"),
    ("hosting.core.turnrun", "TurnRunner", "write_history"),
    ("hosting.core.events", "TurnIO", "publish"),
    ("sessions_app.store", "SessionStore", "create"),
    ("sessions_app.store", "SessionStore", "update"),
    ("sessions_app.eventlog", "EventLog", "_store"),
    ("sessions_app.dbstore", "DatabaseStore", "create"),
    ("sessions_app.dbstore", "DatabaseStore", "update"),
]
SPENT: collections.Counter[str] = collections.Counter()
CALLS: collections.Counter[str] = collections.Counter()


def time_stages() -> None:
    for module, owner, name in STAGES:
        target = importlib.import_module(module)
        target = getattr(target, owner) if owner else target
        original = getattr(target, name)
        label = f"{owner or module}.{name}"

        @functools.wraps(original)
        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return _original(*args, **kwargs)
            finally:
                SPENT[_label] += time.thread_time() - began
                CALLS[_label] += 1

        setattr(target, name, timed)


def trace_in_memory() -> None:
    """What tracing costs the host without the network: the SDK and its batch thread, an exporter that keeps
    the spans (the OTLP exporter's encoding and POST happen on that same batch thread)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from hosting.observability import tracing

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    tracing.use_provider(provider)


def build_app(postgres: str | None = None) -> tuple[Any, str]:
    os.chdir(tempfile.mkdtemp(prefix="bench-cpu-"))
    # One signer, thousands of turns: the per-caller limits (README "Limits") would measure 429s.
    Path(".co").mkdir()
    store = f"store: postgres\ndatabase_url: {postgres}\n" if postgres else ""
    Path(".co/host.yaml").write_text(
        "rate_limit_per_minute: 0\nmax_turns_per_identity: 0\nmax_turns_per_ip: 0\n" + store
    )
    from bench.agents import instant_factory
    from hosting.core.runtime import get_runtime
    from hosting.serving.entry import create_app

    app = create_app(instant_factory, trust="open")
    return app, get_runtime().address


async def call(app: Any, method: str, path: str, body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def drive(app: Any, address: str, args: argparse.Namespace) -> None:
    from bench.run import CLIENT_KEY
    from trust.signing import sign_payload

    def body() -> bytes:
        payload = {"prompt": "hi", "to": address, "timestamp": int(time.time()), "nonce": uuid.uuid4().hex}
        return json.dumps(sign_payload(CLIENT_KEY, payload)).encode()

    for _ in range(20):  # warm-up
        await call(app, args.method, args.path, body())
    bodies = iter([body() for _ in range(args.requests)])
    statuses: collections.Counter[int] = collections.Counter()

    async def client() -> None:
        for one in bodies:
            statuses[await call(app, args.method, args.path, one)] += 1

    SPENT.clear()
    CALLS.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = args.requests
    if args.phases:
        for label, spent in SPENT.most_common():
            print(f"  {spent / n * 1e6:7.0f} µs/request  {CALLS[label] / n:4.1f} calls  {label}")
    print(
        f"{args.method} {args.path}: {n} requests, {args.concurrency} at a time: {cpu / n * 1e6:.0f} µs CPU per request,"
        f" {n / wall:.0f} req/s in process, statuses {dict(statuses)}{group_commits()}"
    )


def group_commits() -> str:
    """Records per batch of the store's group commit (issue 20), when the store has one."""
    from hosting.core.runtime import get_runtime

    stats = getattr(get_runtime().store, "commit_stats", None)
    if stats is None or not stats.batches:
        return ""
    return f", store: {stats.records} records in {stats.batches} writes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--path", default="/input")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--phases", action="store_true", help="CPU per request of each stage of a turn")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="trace every turn (OpenTelemetry SDK, batch processor, spans kept in memory)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="store: postgres on this (empty, throwaway) database, e.g. postgres://postgres@127.0.0.1/x",
    )
    args = parser.parse_args()
    app, address = build_app(args.postgres)
    if args.tracing:
        trace_in_memory()
    if args.phases:
        time_stages()
    import logging

    logging.getLogger("connectonion").propagate = False  # the activity lines go to .co/logs, not the terminal
    asyncio.run(drive(app, address, args))


if __name__ == "__main__":
    main()
