"""CPU the observability hooks add to one turn, measured alone (the whole-turn figure of cpu_per_request.py
moves by more than this between two runs on a shared machine).

    .venv/bin/python bench/observability_cost.py               # metrics only (this process's registry)
    .venv/bin/python bench/observability_cost.py --multiprocess  # metrics as under --workers N (mmap files)
    .venv/bin/python bench/observability_cost.py --tracing     # + OpenTelemetry spans (batch, in memory)

One "turn" is what the host records for a tool-using turn: a TurnWatch through start, queue, thread and end,
six events (one model call with usage, one tool call), two store writes, one replay-log batch, one trust
decision.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20000)
    parser.add_argument("--multiprocess", action="store_true")
    parser.add_argument("--tracing", action="store_true")
    args = parser.parse_args()
    if args.multiprocess:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
    from common import metrics
    from hosting.observability import tracing
    from hosting.observability.turn import TurnWatch

    if args.tracing:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        tracing.use_provider(provider)
    now = time.time()
    events = [
        {"type": "user_input"},
        {"type": "llm_call", "id": "1", "model": "m", "ts": now},
        {
            "type": "llm_result",
            "id": "1",
            "model": "m",
            "duration_ms": 1.0,
            "status": "success",
            "ts": now,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        },
        {"type": "tool_call", "tool_id": "t", "name": "calc", "ts": now},
        {"type": "tool_result", "tool_id": "t", "name": "calc", "status": "completed", "timing_ms": 0.1, "ts": now},
        {"type": "OUTPUT"},
    ]

    def turn() -> None:
        watch = TurnWatch(transport="http", session_id="s", agent="a", prompt="p")
        watch.started()
        watch.running()
        for event in events:
            watch.event(event)
        watch.left_thread()
        watch.ended("done")
        metrics.store_write(0.0001)
        metrics.store_write(0.0001)
        metrics.replay_write(0.0001)
        metrics.trust_decision("open", "accept")

    for _ in range(1000):
        turn()
    cpu = time.process_time()
    for _ in range(args.turns):
        turn()
    cpu = time.process_time() - cpu
    mode = "multiprocess" if args.multiprocess else "one process"
    print(f"{cpu / args.turns * 1e6:.1f} µs CPU per turn (metrics, {mode}{', tracing' if args.tracing else ''})")


if __name__ == "__main__":
    main()
