"""SessionStore: GET-by-id cost with 1,000 vs 1,000,000 records, first load and compaction times.

Run: .venv/bin/python bench/store_bench.py [--big 1000000]
The big file is written directly (one JSON line per record), then read through ``SessionStore``.
Prints a table and the big/small lookup ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessions_app.store import SessionStore


def write_records(path: Path, n: int, *, expired_every: int = 0) -> list[str]:
    now = int(time.time())
    ids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(n)]
    with open(path, "w") as fh:
        for i, sid in enumerate(ids):
            expired = expired_every and i % expired_every == 0
            fh.write(
                json.dumps(
                    {
                        "session_id": sid,
                        "prompt": f"prompt {i}",
                        "status": "done",
                        "result": "r" * 40,
                        "created": now - 10,
                        "expires": now - 5 if expired else now + 86400,
                        "updated_at": now - 10 + i * 1e-6,
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
    return ids


def measure(n: int, lookups: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="store-bench-"))
    path = folder / "session_results.jsonl"
    t0 = time.perf_counter()
    ids = write_records(path, n, expired_every=10)
    write_s = time.perf_counter() - t0

    store = SessionStore(path)
    t0 = time.perf_counter()
    store.get(ids[-1])  # first call loads the whole file into the index
    load_s = time.perf_counter() - t0

    sample = random.Random(1).choices([sid for i, sid in enumerate(ids) if i % 10], k=lookups)
    times = []
    for sid in sample:
        t0 = time.perf_counter()
        store.get(sid)
        times.append(time.perf_counter() - t0)
    # another process appended: the index catches up from the tail only
    other = SessionStore(path)
    other.create(session_id="appended", prompt="p")
    t0 = time.perf_counter()
    store.get("appended")
    tail_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    dropped = store.compact()
    compact_s = time.perf_counter() - t0
    size_mb = path.stat().st_size / 1e6
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    return {
        "records": n,
        "write_s": write_s,
        "load_s": load_s,
        "get_median_us": statistics.median(times) * 1e6,
        "get_p99_us": sorted(times)[int(len(times) * 0.99)] * 1e6,
        "tail_refresh_us": tail_s * 1e6,
        "compact_s": compact_s,
        "dropped": dropped,
        "size_after_mb": size_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args()
    rows = [measure(args.small, args.lookups), measure(args.big, args.lookups)]
    header = f"{'records':>10} {'get median':>11} {'get p99':>9} {'tail refresh':>13} {'first load':>11} {'compaction':>11} {'dropped':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['records']:>10,} {r['get_median_us']:>9.2f}us {r['get_p99_us']:>7.2f}us {r['tail_refresh_us']:>11.1f}us "
            f"{r['load_s']:>10.3f}s {r['compact_s']:>10.3f}s {r['dropped']:>8,}"
        )
    small, big = rows
    print(
        f"\nGET-by-id median ratio {big['records']:,} / {small['records']:,} records: "
        f"{big['get_median_us'] / small['get_median_us']:.2f}x"
    )
    print(f"(big file written directly in {big['write_s']:.1f} s)")


if __name__ == "__main__":
    main()
