"""The durable writes of a turn without the rest of the host: what group commit amortises.

    .venv/bin/python bench/store_writes.py                    # 8 threads x 500 turns on the JSONL store
    .venv/bin/python bench/store_writes.py --threads 1 --eventlog

Each simulated turn writes what a real turn writes: the ``running`` record (``create``), six replay-log
events (the last one ``OUTPUT``, which must be stored before the answer) and the ``done`` record with a short
conversation (``update``). Prints process CPU per turn, turns/s and, when the store has one, its group-commit
counters (records per batch). Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessions_app.eventlog import EventLog
from sessions_app.store import SessionStore

SESSION = {
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
    "trace": [{"type": "user_input", "content": "hi"}],
    "turn": 1,
}


def turn(store: SessionStore, eventlog: EventLog | None) -> None:
    sid = str(uuid.uuid4())
    store.create(session_id=sid, prompt="hi", owner="0x" + "ab" * 32, input_id=None)
    if eventlog is not None:
        for seq, kind in enumerate(["user_input", "thinking", "llm_call", "llm_result", "assistant", "OUTPUT"], 1):
            eventlog.append(sid, seq, 1, {"type": kind, "id": str(seq), "content": "ok"})
    store.update(sid, status="done", result="ok", duration_ms=3, session=SESSION, prompt="hi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--turns", type=int, default=500, help="per thread")
    parser.add_argument("--eventlog", action="store_true", help="also write six replay-log events per turn")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="store-writes-"))
    store = SessionStore(folder / "session_results.jsonl")
    eventlog = EventLog(folder / "events.sqlite3") if args.eventlog else None
    start = threading.Barrier(args.threads + 1)

    def worker() -> None:
        start.wait()
        for _ in range(args.turns):
            turn(store, eventlog)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    start.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    if eventlog is not None:
        eventlog.flush()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = args.threads * args.turns
    stats = getattr(store, "commit_stats", None)
    extra = f", {stats.records / max(stats.batches, 1):.2f} records per batch" if stats else ""
    print(f"{n} turns, {args.threads} threads: {cpu / n * 1e6:.0f} µs CPU per turn, {n / wall:.0f} turns/s{extra}")


if __name__ == "__main__":
    main()
