"""Replicas (issue 18): one vs three hosts behind haproxy, PostgreSQL vs JSONL per turn, Redis replay rate,
``GET /sessions/{id}`` with 10^3 vs 10^6 rows in PostgreSQL.

Run: .venv/bin/python bench/replicas.py [--turns 600] [--big 1000000]
Needs PostgreSQL on 127.0.0.1:5432 (a database is made and dropped), redis-server and haproxy installed.
Prints a table; asserts nothing. Figures of one run (2026-12-02, while other test suites ran on the same
machine, so noisy; echo agent, 400 concurrent turns):

    400 concurrent turns, haproxy, 1 replica                   33 turns/s, p50 9111 ms, p95 11420 ms
    400 concurrent turns, haproxy, 3 replicas                  47 turns/s, p50 6427 ms, p95 8317 ms
    per turn, sequential, store: postgres + replay_log: redis  39.7 ms
    per turn, sequential, JSONL + SQLite (defaults)            18.1 ms
    replay log Redis Streams: 10,000 events                    append 13,668/s, resume read 6,638 events/s
    replay log SQLite: 10,000 events                           append 30,779/s, resume read 64,945 events/s
    GET /sessions/{id}, 1,000 rows                             12.57 ms
    GET /sessions/{id}, 1,000,000 rows                         8.95 ms   (flat: primary-key lookup)

Why Redis Streams for the replay log rather than PostgreSQL: the stream's entry id is the event number, so
resume is one range read and a duplicate append is refused by Redis itself (exactly once); a PostgreSQL
table would take an insert per event on the database that already carries the results. THIS MACHINE HAS 2 CORES shared by everything on it: three replicas (plus
haproxy, PostgreSQL and Redis) compete for the same two cores, so "three replicas" here measures the cost of
the shared backends and the balancer, not the scale-out a deployment on three machines gets.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg

from tests.conftest import NO_TURN_LIMITS, HostProcess
from tests.e2e.replicas.conftest import PG, Haproxy, Machines
from tests.support.hosts import OwnRedis


def admin(sql: str) -> None:
    with psycopg.connect(PG + "/test", autocommit=True) as db:
        db.execute(sql)


async def flood(url: str, n: int) -> tuple[float, list[float], int]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=100)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def one(i: int) -> int:
            t0 = time.perf_counter()
            r = await client.post(
                "/input", json={"prompt": f"calculate {i}+1", "session": {"session_id": str(uuid.uuid4())}}
            )
            latencies.append(time.perf_counter() - t0)
            return r.status_code

        t0 = time.perf_counter()
        codes = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return wall, latencies, codes.count(200)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


def sequential_ms(url: str, n: int) -> float:
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/input", json={"prompt": "calculate 1+1"})
        t0 = time.perf_counter()
        for i in range(n):
            client.post("/input", json={"prompt": f"calculate {i}+1"})
        return (time.perf_counter() - t0) / n * 1000


def get_ms(url: str, ids: list[str]) -> float:
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get(f"/sessions/{ids[0]}")
        t0 = time.perf_counter()
        for sid in ids:
            assert client.get(f"/sessions/{sid}").status_code == 200
        return (time.perf_counter() - t0) / len(ids) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=600)
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    name = f"replicas_bench_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    pg_url = f"{PG}/{name}"
    redis = OwnRedis(base / "redis-dir")
    (base / "redis-dir").mkdir()
    redis.start()
    rows: list[tuple[str, str]] = []
    try:
        group = Machines(base / "m", pg_url, redis.url)
        hosts = group.start(3, "tests.agents:echo_factory")
        try:
            for label, backends in (("1 replica", hosts[:1]), ("3 replicas", hosts)):
                folder = base / f"haproxy-{len(backends)}"
                folder.mkdir()
                balancer = Haproxy(folder, [f"127.0.0.1:{h.port}" for h in backends]).start()
                try:
                    asyncio.run(flood(balancer.url, 50))  # warm-up
                    wall, lat, ok = asyncio.run(flood(balancer.url, args.turns))
                finally:
                    balancer.stop()
                rows.append(
                    (
                        f"{args.turns} concurrent turns, haproxy, {label}",
                        (
                            f"{args.turns / wall:.0f} turns/s, p50 {pct(lat, 0.5):.0f} ms, "
                            f"p95 {pct(lat, 0.95):.0f} ms, {ok} ok"
                        ),
                    )
                )
            rows.append(
                (
                    "per turn, sequential, store: postgres + replay_log: redis",
                    f"{sequential_ms(hosts[0].url, 200):.1f} ms",
                )
            )
        finally:
            group.stop()
        plain = base / "plain"
        plain.mkdir()
        host = HostProcess(plain, "tests.agents:echo_factory", *NO_TURN_LIMITS).start()
        try:
            rows.append(("per turn, sequential, JSONL + SQLite (defaults)", f"{sequential_ms(host.url, 200):.1f} ms"))
        finally:
            host.stop()

        # resume replay rate: 10,000 events of one session read back in pages, as a resume does
        from sessions_app.eventlog import EventLog
        from sessions_app.redislog import RedisEventLog

        for label, log in (
            ("Redis Streams", RedisEventLog(redis.url, namespace="bench", ttl=3600)),
            ("SQLite", EventLog(base / "events.sqlite3")),
        ):
            sid = str(uuid.uuid4())
            t0 = time.perf_counter()
            for seq in range(1, 10_001):
                log.append(sid, seq, 1, {"type": "tool_result", "id": str(seq), "result": "x" * 200})
            log.flush()
            write = time.perf_counter() - t0
            t0 = time.perf_counter()
            last, got = 0, 0
            while page := log.after(sid, last, limit=500):
                got += len(page)
                last = int(page[-1]["id"])
            read = time.perf_counter() - t0
            rows.append(
                (
                    f"replay log {label}: 10,000 events",
                    f"append {10_000 / write:,.0f}/s, resume read {got / read:,.0f} events/s",
                )
            )

        # GET /sessions/{id} with 10^3 and then 10^6 rows in the table
        group = Machines(base / "g", pg_url, None)
        (host,) = group.start(1, "tests.agents:echo_factory")
        try:
            with psycopg.connect(pg_url, autocommit=True) as db:
                db.execute("DELETE FROM sessions_app_result")
            for n in (1000, args.big):
                with psycopg.connect(pg_url, autocommit=True) as db:
                    db.execute("DELETE FROM sessions_app_result")
                    t0 = time.perf_counter()
                    db.execute(
                        "INSERT INTO sessions_app_result SELECT 'bench-' || i, 'done', extract(epoch from now()),"
                        " extract(epoch from now()) + 86400, extract(epoch from now()), NULL, NULL, 'prompt ' || i,"
                        ' \'{"prompt":"p","result":"\' || repeat(\'r\', 40) || \'"}\' FROM generate_series(1, %s) i',
                        (n,),
                    )
                    db.execute("ANALYZE sessions_app_result")
                    filled = time.perf_counter() - t0
                ids = [f"bench-{i}" for i in range(1, n + 1, max(1, n // 300))][:300]
                rows.append(
                    (f"GET /sessions/{{id}}, {n:,} rows (filled in {filled:.1f} s)", f"{get_ms(host.url, ids):.2f} ms")
                )
        finally:
            group.stop()
    finally:
        redis.stop()
        admin(f'DROP DATABASE "{name}" WITH (FORCE)')
    width = max(len(k) for k, _ in rows)
    print("2 cores shared by every process here (3 replicas, haproxy, PostgreSQL, Redis, the client)")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
