"""L10 soak (HARDENING §5): mixed traffic against one real host for a bounded time, loopback only.

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --minutes 1     # the short form

The host is ``manage.py runhost bench.agents:soak_factory --trust open`` (started by ``bench.run.Server``): the
demo agent plus ``sleep N`` (slow turn) and ``fail`` (the agent raises). An open-loop generator issues
``--rate`` operations a second (at most ``--inflight`` at once), each drawn from this mix:

* 60% HTTP turns ``POST /input``: 90% instant (``calculate (2+3)*7``), 5% ``sleep 2``, 5% ``fail`` (500 expected);
* 20% WebSocket turns ``save a note: soak``: CONNECT, INPUT, answer the ``approval_needed``, wait for OUTPUT;
* 10% uploads: ``POST /input`` with one ~1 MiB file (base64);
* 5% reconnects: a WS turn ``count to 4 slowly``, drop the socket after two events, ``ATTACH`` with
  ``session_id`` and ``last_msg_id``; every later event must arrive once, ending with OUTPUT;
* 5% hostile rows from the catalogue: invalid JSON (400), a forged signature (401), a body 64 KiB over the
  per-request cap (413; the host runs with ``--max-file-size 2 --max-files-per-request 1`` so that is ~5 MiB). "Right" = the documented status.

Every ``--report`` seconds (30) and at the end it prints throughput, p50/p99 per kind, errors, and the server's
RSS and open fds (process and children, psutil, sampled every 5 s). Goals: 0 errors on valid requests, RSS
growth after the ``--warmup`` (2 min) < 5%, fds flat ± 20, instant ``/input`` p99 < 100 ms. Writes
``bench/out/soak.json``. No asserts: it measures. The generator shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402
import websockets  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from bench.run import Server, pct  # noqa: E402
from bench.ws_bench import recv  # noqa: E402
from hosting.core.uploads import max_request_bytes  # noqa: E402
from trust.signing import sign_payload  # noqa: E402

MIX = (("http", 60), ("ws_approval", 20), ("upload", 10), ("reattach", 5), ("hostile", 5))
VALID = ("http_instant", "http_slow", "http_fail", "ws_approval", "upload", "reattach")
TIMEOUT = 30
# Per-request cap: --max-file-size 2 and --max-files-per-request 1 keep the oversize row small (the default
# 10 × 10 MiB cap would make each hostile row send ~270 MiB); the ~1 MiB uploads fit well under it.
LIMIT_ARGS = ("--max-file-size", "2", "--max-files-per-request", "1")
CAP = max_request_bytes(2, 1)
UPLOAD = base64.b64encode(os.urandom(3 * 2**18 + 1000)).decode()  # ~1 MiB of base64 text on the wire


class Stats:
    """Latencies and outcomes per kind, overall and for the current report window."""

    def __init__(self) -> None:
        self.total: dict[str, dict[str, Any]] = {}
        self.window: dict[str, dict[str, Any]] = {}

    def add(self, kind: str, seconds: float, ok: bool, note: str = "") -> None:
        for table in (self.total, self.window):
            row = table.setdefault(kind, {"lat": [], "errors": 0, "notes": {}})
            row["lat"].append(seconds)
            if not ok:
                row["errors"] += 1
                row["notes"][note] = row["notes"].get(note, 0) + 1

    @staticmethod
    def summary(table: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
        out = {}
        for kind, row in sorted(table.items()):
            lat = row["lat"]
            out[kind] = {
                "count": len(lat),
                "per_s": len(lat) / seconds if seconds else 0.0,
                "p50_ms": pct(lat, 0.5) * 1000,
                "p99_ms": pct(lat, 0.99) * 1000,
                "errors": row["errors"],
                "error_notes": dict(list(row["notes"].items())[:5]),
            }
        return out


class TracedServer(Server):
    """Our host under ``bench/traced_host.py``: tracemalloc on, a snapshot per SIGUSR1."""

    def command(self) -> list[str]:
        return [
            part if part != str(REPO / "manage.py") else str(REPO / "bench" / "traced_host.py")
            for part in super().command()
        ]


def snapshot(pid: int, folder: Path, number: int, timeout: float = 180) -> Path | None:
    os.kill(pid, signal.SIGUSR1)
    target = folder / f"snapshot-{number}.trace"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not target.exists():
        time.sleep(0.5)
    return target if target.exists() else None


def trace_growth(first: Path, last: Path, top: int = 15) -> dict[str, Any]:
    """Where traced memory grew between the warm-up snapshot and the idle end, by line and by file."""
    a, b = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    total = sum(s.size for s in b.statistics("filename")) - sum(s.size for s in a.statistics("filename"))

    def rows(key: str) -> list[dict[str, Any]]:
        return [
            {
                "where": str(d.traceback[0]) if key == "lineno" else d.traceback[0].filename,
                "grew_kib": round(d.size_diff / 1024, 1),
                "blocks": d.count_diff,
            }
            for d in b.compare_to(a, key)[:top]
        ]

    stacks = (
        [
            {
                "grew_kib": round(d.size_diff / 1024, 1),
                "blocks": d.count_diff,
                "stack": [str(frame) for frame in d.traceback][-8:],
            }
            for d in b.compare_to(a, "traceback")[:8]
        ]
        if len(b.traces) and b.traceback_limit > 1
        else []
    )
    return {
        "traced_growth_mib": round(total / 2**20, 2),
        "by_line": rows("lineno"),
        "by_file": rows("filename"),
        "by_stack": stacks,
    }


def fd_kinds(pid: int) -> dict[str, int]:
    """The server's open fds by what they point at (``/proc/<pid>/fd``; files by name under the project)."""
    kinds: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                kind = (
                    target.split(":")[0]
                    if ":" in target and not target.startswith("/")
                    else ("/".join(Path(target).parts[-2:]) if "/.co/" in target else target)
                )
                kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def process_figures(pid: int) -> tuple[int, int, int]:
    """RSS bytes, open fds and threads of the server process and its children."""
    rss = fds = threads = 0
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for p in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                rss += p.memory_info().rss
                fds += p.num_fds()
                threads += p.num_threads()
    return rss, fds, threads


class Soak:
    def __init__(self, server: Server, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.stats = Stats()
        self.key = SigningKey.generate()
        self.rng = random.Random(args.seed)
        self.samples: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.ws_url = f"ws://127.0.0.1:{server.port}/ws"
        self.store_path = server.folder / ".co" / "session_results.jsonl"
        self.trace_dir: Path | None = None
        self.traced_warm: Path | None = None

    # -- operations: each returns (ok, note) --------------------------------------------------------------
    async def http(self, client: httpx.AsyncClient) -> None:
        roll = self.rng.random()
        kind, prompt, expect = (
            ("http_slow", "sleep 2", 200)
            if roll < 0.05
            else ("http_fail", "fail", 500)
            if roll < 0.10
            else ("http_instant", "calculate (2+3)*7", 200)
        )
        await self.timed(kind, self._post(client, {"prompt": prompt}, expect))

    async def upload(self, client: httpx.AsyncClient) -> None:
        body = {"prompt": "read the file", "files": [{"name": f"soak-{uuid.uuid4().hex[:8]}.bin", "data": UPLOAD}]}
        await self.timed("upload", self._post(client, body, 200))

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any], expect: int) -> tuple[bool, str]:
        response = await client.post("/input", json=body)
        if response.status_code != expect:
            return False, f"status {response.status_code}: {response.text[:80]}"
        data = response.json()
        ok = data.get("status") == "done" if expect == 200 else "error" in data
        return ok, "" if ok else f"body {response.text[:80]}"

    async def ws_approval(self) -> None:
        async def run() -> tuple[bool, str]:
            async with websockets.connect(self.ws_url, ping_interval=None, max_size=2**24) as ws:
                await ws.send('{"type":"CONNECT"}')
                while (await recv(ws))["type"] != "AGENT_PROFILE":
                    pass
                await ws.send(json.dumps({"type": "INPUT", "prompt": "save a note: soak"}))
                asked = False
                while True:
                    frame = await recv(ws)
                    if frame["type"] == "approval_needed":
                        asked = True
                        await ws.send(
                            json.dumps(
                                {
                                    "type": "APPROVAL_RESPONSE",
                                    "approved": True,
                                    "scope": "once",
                                    "request_id": frame["id"],
                                }
                            )
                        )
                    elif frame["type"] == "OUTPUT":
                        ok = asked and "note saved" in str(frame.get("result"))
                        return ok, "" if ok else f"output {str(frame.get('result'))[:80]}"
                    elif frame["type"] == "ERROR":
                        return False, f"ERROR {frame.get('code')} {str(frame.get('message'))[:60]}"

        await self.timed("ws_approval", run())

    async def reattach(self) -> None:
        async def run() -> tuple[bool, str]:
            async with websockets.connect(self.ws_url, ping_interval=None, max_size=2**24) as ws:
                await ws.send('{"type":"CONNECT"}')
                connected = await recv(ws)
                session_id = connected["session_id"]
                while (await recv(ws))["type"] != "AGENT_PROFILE":
                    pass
                await ws.send(json.dumps({"type": "INPUT", "prompt": "count to 4 slowly"}))
                seen: list[int] = []
                while len(seen) < 2:
                    frame = await recv(ws)
                    if "id" in frame:
                        seen.append(int(frame["id"]))
            last = seen[-1]
            async with websockets.connect(self.ws_url, ping_interval=None, max_size=2**24) as ws:
                await ws.send(json.dumps({"type": "ATTACH", "session_id": session_id, "last_msg_id": str(last)}))
                connected = await recv(ws)
                if connected.get("status") not in ("running", "completed"):
                    return False, f"ATTACH status {connected.get('status')}"
                ids: list[int] = []
                while True:
                    frame = await recv(ws)
                    if "id" in frame:
                        ids.append(int(frame["id"]))
                    if frame["type"] == "OUTPUT":
                        break
                    if frame["type"] == "ERROR":
                        return False, f"ERROR {frame.get('code')}"
            ok = ids == list(range(last + 1, last + 1 + len(ids))) and "1, 2, 3, 4" in str(frame.get("result"))
            return ok, "" if ok else f"ids after {last}: {ids[:6]}..."

        await self.timed("reattach", run())

    async def hostile(self, client: httpx.AsyncClient) -> None:
        row = self.rng.choice(("bad_json", "bad_signature", "oversize"))
        if row == "bad_json":
            await self.timed(
                "hostile_bad_json",
                self._status(
                    client.post("/input", content=b'{"prompt": "x",', headers={"content-type": "application/json"}), 400
                ),
            )
        elif row == "bad_signature":
            payload = {
                "prompt": "hi",
                "to": self.server.address,
                "timestamp": int(time.time()),
                "nonce": uuid.uuid4().hex,
            }
            envelope = sign_payload(self.key, payload)
            envelope["signature"] = ("0" if envelope["signature"][0] != "0" else "1") + envelope["signature"][1:]
            await self.timed("hostile_bad_signature", self._status(client.post("/input", json=envelope), 401))
        else:
            await self.timed("hostile_oversize", self._oversize())

    @staticmethod
    async def _status(request: Any, expect: int) -> tuple[bool, str]:
        response = await request
        ok = response.status_code == expect and "error" in response.json()
        return ok, "" if ok else f"status {response.status_code}: {response.text[:60]}"

    async def _oversize(self) -> tuple[bool, str]:
        """A body over the cap: half the time a declared 1 GiB of which only the first bytes come, half the time
        a whole body 64 KiB over the cap. The host answers 413 on the headers and closes the connection
        (``hosting.serving.limits``), so the rest of a body may meet a closed socket."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        declared, sent = (2**30, 1024) if self.rng.random() < 0.5 else (CAP + 65536, CAP + 65536)
        try:
            writer.write(
                (
                    f"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {declared}\r\n\r\n"
                ).encode()
            )
            with contextlib.suppress(ConnectionError):
                writer.write(b"x" * sent)
                await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split()[1])
            return status == 413, "" if status == 413 else f"status {status}"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def timed(self, kind: str, work: Any) -> None:
        began = time.perf_counter()
        try:
            ok, note = await asyncio.wait_for(work, TIMEOUT)
        except (
            TimeoutError,
            OSError,
            httpx.HTTPError,
            websockets.WebSocketException,
            ValueError,
            KeyError,
            asyncio.IncompleteReadError,
        ) as exc:
            ok, note = False, f"{type(exc).__name__}: {str(exc)[:60]}"
        self.stats.add(kind, time.perf_counter() - began, ok, note)

    # -- the run ------------------------------------------------------------------------------------------
    def sampler(self, stop: threading.Event, began: float) -> None:
        while not stop.is_set():
            rss, fds, threads = process_figures(self.server.proc.pid)
            stored = 0
            with contextlib.suppress(OSError):
                stored = self.store_path.stat().st_size
            self.samples.append(
                {
                    "t": round(time.monotonic() - began, 1),
                    "rss_mib": round(rss / 2**20, 2),
                    "fds": fds,
                    "threads": threads,
                    "store_mib": round(stored / 2**20, 2),
                }
            )
            stop.wait(5)

    def report(self, elapsed: float, window: float, final: bool = False) -> None:
        table = self.stats.total if final else self.stats.window
        summary = Stats.summary(table, elapsed if final else window)
        last = self.samples[-1] if self.samples else {}
        valid = sum(summary.get(k, {}).get("count", 0) for k in VALID)
        valid_errors = sum(summary.get(k, {}).get("errors", 0) for k in VALID)
        entry = {
            "t": round(elapsed, 1),
            "ops_per_s": sum(v["count"] for v in summary.values()) / (elapsed if final else window),
            "valid": valid,
            "valid_errors": valid_errors,
            "rss_mib": last.get("rss_mib"),
            "fds": last.get("fds"),
            "threads": last.get("threads"),
            "kinds": summary,
        }
        if not final:
            self.reports.append(entry)
            self.stats.window = {}
        label = "TOTAL" if final else f"t={elapsed:5.0f}s"
        print(
            f"{label}: {entry['ops_per_s']:.1f} ops/s, valid {valid} with {valid_errors} errors, "
            f"RSS {last.get('rss_mib')} MiB, fds {last.get('fds')}, threads {last.get('threads')}",
            flush=True,
        )
        for kind, row in summary.items():
            notes = f"  {row['error_notes']}" if row["errors"] else ""
            print(
                f"    {kind:22} {row['count']:6} ({row['per_s']:5.1f}/s)  p50 {row['p50_ms']:8.1f} ms  "
                f"p99 {row['p99_ms']:8.1f} ms  errors {row['errors']}{notes}",
                flush=True,
            )

    async def run(self) -> dict[str, Any]:
        args = self.args
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        limits = httpx.Limits(max_connections=args.inflight, max_keepalive_connections=args.inflight)
        stop = threading.Event()
        began = time.monotonic()
        sampler = threading.Thread(target=self.sampler, args=(stop, began), daemon=True)
        sampler.start()
        inflight = asyncio.Semaphore(args.inflight)
        tasks: set[asyncio.Task] = set()
        skipped = 0
        async with httpx.AsyncClient(base_url=self.server.url, limits=limits, timeout=TIMEOUT) as client:
            ops = {
                "http": lambda: self.http(client),
                "upload": lambda: self.upload(client),
                "ws_approval": self.ws_approval,
                "reattach": self.reattach,
                "hostile": lambda: self.hostile(client),
            }

            async def one(kind: str) -> None:
                try:
                    await ops[kind]()
                finally:
                    inflight.release()

            end = began + args.minutes * 60
            next_report = began + args.report
            window_start = began
            issued = 0
            while (now := time.monotonic()) < end:
                due = began + issued / args.rate
                if due > now:
                    await asyncio.sleep(min(due - now, end - now))
                    continue
                issued += 1
                if inflight.locked():
                    skipped += 1  # open loop: a full house drops the tick instead of queueing it
                else:
                    await inflight.acquire()
                    task = asyncio.create_task(one(self.rng.choices(kinds, weights)[0]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if self.trace_dir is not None and not self.traced_warm and now - began >= args.warmup:
                    self.traced_warm = await asyncio.to_thread(snapshot, self.server.proc.pid, self.trace_dir, 1)
                if now >= next_report:
                    self.report(now - began, now - window_start)
                    window_start, next_report = now, next_report + args.report
            await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.monotonic() - began
        stop.set()
        sampler.join(10)
        self.samples.append(
            {
                "t": round(elapsed, 1),
                **dict(
                    zip(
                        ("rss_mib", "fds", "threads"),
                        (
                            round(v / 2**20, 2) if i == 0 else v
                            for i, v in enumerate(process_figures(self.server.proc.pid))
                        ),
                    )
                ),
            }
        )
        self.report(elapsed, elapsed, final=True)
        return {
            "elapsed_s": elapsed,
            "skipped_ticks": skipped,
            "total": Stats.summary(self.stats.total, elapsed),
            "reports": self.reports,
            "samples": self.samples,
        }


def growth(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """RSS growth and fd spread after the warm-up: first post-warm-up sample vs the last (and the peak)."""
    after = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    first, last = after[0], after[-1]
    return {
        "from_t": first["t"],
        "rss_start_mib": first["rss_mib"],
        "rss_end_mib": last["rss_mib"],
        "rss_peak_mib": max(s["rss_mib"] for s in after),
        "rss_growth_pct": (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"] * 100 if first["rss_mib"] else 0,
        "fds_min": min(s["fds"] for s in after),
        "fds_max": max(s["fds"] for s in after),
        "fds_start": first["fds"],
        "fds_end": last["fds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--rate", type=float, default=20.0, help="operations started per second (open loop)")
    parser.add_argument("--inflight", type=int, default=64, help="most operations in flight at once")
    parser.add_argument("--report", type=float, default=30.0, help="seconds between reports")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds before RSS/fd growth is measured (default 120, or a fifth of a run shorter than 10 minutes)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--result-ttl",
        type=int,
        help="the host's result_ttl in seconds (default: the host's, 24 h);"
        " a short one shows whether RSS levels off once results expire",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the host under tracemalloc and report where memory grew after the warm-up "
        "(slower: the figures are for leak hunting, not latency)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "soak.json"))
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 120.0 if args.minutes >= 10 else args.minutes * 60 / 5
    print(
        f"soak: {args.minutes:g} min at {args.rate:g} ops/s (≤ {args.inflight} in flight), mix "
        + ", ".join(f"{k} {w}%" for k, w in MIX),
        flush=True,
    )
    trace_tmp = tempfile.TemporaryDirectory(prefix="soak-trace-") if args.tracemalloc else None
    if trace_tmp is not None:
        os.environ["SOAK_TRACE_DIR"] = trace_tmp.name
    extra = LIMIT_ARGS + (("--result-ttl", str(args.result_ttl)) if args.result_ttl else ())
    with (TracedServer if args.tracemalloc else Server)("ours", agent="soak", extra=extra) as server:
        soak = Soak(server, args)
        soak.trace_dir = Path(trace_tmp.name) if trace_tmp is not None else None
        fds_before = fd_kinds(server.proc.pid)
        result = asyncio.run(soak.run())
        time.sleep(2)  # closed sockets settle
        result["fd_kinds"] = {"before": fds_before, "after": fd_kinds(server.proc.pid)}
        if soak.traced_warm is not None:
            end = snapshot(server.proc.pid, soak.trace_dir, 2)
            result["tracemalloc"] = trace_growth(soak.traced_warm, end) if end else {"error": "no end snapshot"}
    result["growth"] = growth(result["samples"], args.warmup)
    total = result["total"]
    result["valid_requests"] = sum(total.get(k, {}).get("count", 0) for k in VALID)
    result["valid_errors"] = sum(total.get(k, {}).get("errors", 0) for k in VALID)
    result["config"] = vars(args) | {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    g = result["growth"]
    print(
        f"\nvalid requests {result['valid_requests']}, errors {result['valid_errors']} "
        f"({result['valid_errors'] / max(result['valid_requests'], 1) * 100:.3f}%); skipped ticks "
        f"{result['skipped_ticks']}"
    )
    print(
        f"after {g['from_t']:.0f} s: RSS {g['rss_start_mib']:.1f} -> {g['rss_end_mib']:.1f} MiB "
        f"({g['rss_growth_pct']:+.2f}%, peak {g['rss_peak_mib']:.1f}); fds {g['fds_start']} -> {g['fds_end']} "
        f"(range {g['fds_min']}-{g['fds_max']})"
    )
    print(
        f"server fds idle before: {result['fd_kinds']['before']}\n            idle after:  {result['fd_kinds']['after']}"
    )
    traced = result.get("tracemalloc", {})
    if "by_line" in traced:
        print(f"tracemalloc, warm-up -> idle end: {traced['traced_growth_mib']:+.2f} MiB traced; top lines:")
        for row in traced["by_line"][:12]:
            print(f"    {row['grew_kib']:+10.1f} KiB {row['blocks']:+8} blocks  {row['where']}")
        for row in traced["by_stack"][:5]:
            print(f"    {row['grew_kib']:+10.1f} KiB {row['blocks']:+8} blocks  allocated at (innermost last):")
            for frame in row["stack"]:
                print(f"        {frame}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
