"""All HTTP benchmarks in one command: our host vs the released connectonion host vs a bare ASGI floor.

    .venv/bin/python bench/run.py            # full run, ~10 min on 2 cores
    .venv/bin/python bench/run.py --quick    # ~2 min subset (1 repeat, shorter points)

Scenarios (HARDENING §5):

* L5  ``POST /input``, instant agent, 1 / 8 / 64 concurrent clients: req/s, p50, p99. Each point runs
  against a freshly started server (the reference slows down as its store grows) for at most
  ``--seconds`` or ``--requests`` requests, whichever comes first, after a short warm-up.
  L5 also runs a fourth server, the *stack floor* (``stack_floor.py``: stock Django under daphne, one async
  view with a fixed answer): what the stack the design fixed costs before any work of ours.
* L2  100 concurrent 3 s turns: wall time.
* L1  1,000 concurrent 1 s turns, our host with ``--pool-size 1000``: wall time, errors, ``/health`` p99
  measured meanwhile by a separate client, server RSS peak (process + children, psutil).
* L6  our req/s at 8 clients with 100,000 ``done`` records pre-written to ``.co/session_results.jsonl``
  vs fresh (and the start-up time with them).

Every request to our host and to the reference is signed (PROTOCOL §2.1 envelope, ``trust.signing.sign_payload``)
because the reference requires it; the floor gets the same bodies. Both hosts run at ``trust: open``.
Each figure is the median of ``--repeats`` runs. The load generator (one asyncio process with a minimal
keep-alive HTTP/1.1 client; ``--client httpx`` for httpx) shares the machine's cores with the server.
Prints a table and writes ``bench/out/results.json``. No asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from tests.support.net import free_port  # noqa: E402
from trust.signing import sign_payload  # noqa: E402

PY = str(REPO / ".venv" / "bin" / "python")
if not Path(PY).exists():
    PY = sys.executable
KINDS = ("ours", "reference", "floor")
L5_KINDS = (*KINDS, "stack")  # + stock Django under daphne with a fixed answer (stack_floor.py)
CLIENT_KEY = SigningKey.generate()
CLIENT = "raw"
STORE: tuple[str, ...] = ()  # ours' result store flags (--store postgres: "--store", "postgres", "--database-url", URL)


# ───────────────────────────── servers ─────────────────────────────

NO_LIMITS = (
    "--rate-limit-per-minute",
    "0",
    "--max-turns-per-identity",
    "0",
    "--max-turns-per-ip",
    "0",
    "--max-ws-per-ip",
    "0",
    "--max-connections-per-ip",
    "0",
)


class Server:
    """One server process in its own temp project folder; ``start()`` waits for ``/health``."""

    def __init__(self, kind: str, agent: str = "instant", extra: tuple[str, ...] = (), folder: Path | None = None):
        self.kind = kind
        self.agent = agent
        self.extra = extra
        self._tmp = None if folder else tempfile.TemporaryDirectory(prefix=f"bench-{kind}-")
        self.folder = folder or Path(self._tmp.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.address = "0x" + "0" * 64
        self.start_seconds = 0.0

    def command(self) -> list[str]:
        if self.kind == "ours":
            # One loopback client with one key drives every point: the per-caller limits (60 turns/min, 8 at a
            # time by default) would measure the limiter, not the host, so they are off here.
            return [
                PY,
                str(REPO / "manage.py"),
                "runhost",
                f"bench.agents:{self.agent}_factory",
                "--no-relay",
                "--port",
                str(self.port),
                "--trust",
                "open",
                *NO_LIMITS,
                *STORE,
                *self.extra,
            ]
        if self.kind == "reference":
            return [PY, str(REPO / "bench" / "reference_host.py"), "--port", str(self.port), "--agent", self.agent]
        if self.kind == "stack":
            return [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "bench.stack_floor:application"]
        return [PY, str(REPO / "bench" / "floor.py"), "--port", str(self.port)]

    def start(self, timeout: float = 120.0) -> Server:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        env.pop("CONNECTONION_ENV", None)
        self.log = open(self.folder / "server.log", "w")  # noqa: SIM115 - closed in stop()
        began = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.folder, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{(self.folder / 'server.log').read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{self.kind} did not answer /health within {timeout} s")
        self.start_seconds = time.monotonic() - began
        if self.kind in ("ours", "reference"):
            self.address = httpx.get(self.url + "/info", timeout=10).json()["address"]
        return self

    def rss(self) -> int:
        """RSS of the server process and its children, bytes."""
        try:
            proc = psutil.Process(self.proc.pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total
        except psutil.Error:
            return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(Exception):
            self.log.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ───────────────────────────── load generation ─────────────────────────────


def signed_body(prompt: str, to: str) -> bytes:
    payload = {"prompt": prompt, "to": to, "timestamp": int(time.time()), "nonce": uuid.uuid4().hex}
    return json.dumps(sign_payload(CLIENT_KEY, payload)).encode()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RawClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a few µs of client CPU per request.

    httpx costs ~2-3 ms of CPU per request and its pool gets slower with many connections; on 2 shared cores
    that made the load generator, not the server, the limit (the bare floor took 10.6 s for 1,000 turns of
    ``asyncio.sleep(1)`` with httpx). ``--client httpx`` still selects httpx.
    """

    def __init__(self, server: Server, timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _exchange(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.server.port, limit=2**22)
        head = (
            f"POST /input HTTP/1.1\r\nHost: 127.0.0.1:{self.server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            payload = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            payload = b"".join(p[:-2] for p in parts)
        else:
            payload = await self.reader.read()
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
        return status, payload

    async def post(self, body: bytes) -> bool:
        try:
            status, payload = await asyncio.wait_for(self._exchange(body), self.timeout)
            return status == 200 and json.loads(payload).get("status") == "done"
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class HttpxClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, body: bytes) -> bool:
        try:
            response = await self.client.post("/input", content=body, headers={"content-type": "application/json"})
            return response.status_code == 200 and response.json().get("status") == "done"
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def clients_for(server: Server, count: int, timeout: float):
    """``count`` client handles: raw keep-alive connections, or handles onto one shared httpx pool."""
    if CLIENT == "httpx":
        limits = httpx.Limits(max_connections=count + 1, max_keepalive_connections=count + 1)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
            yield [HttpxClient(client) for _ in range(count)]
        return
    handles = [RawClient(server, timeout) for _ in range(count)]
    try:
        yield handles
    finally:
        for handle in handles:
            handle.close()


async def _post(client: Any, server: Server, prompt: str) -> tuple[float, bool]:
    body = signed_body(prompt, server.address)
    began = time.perf_counter()
    ok = await client.post(body)
    return time.perf_counter() - began, ok


async def throughput(server: Server, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """``clients`` loops posting instant turns back to back, bounded by time and by request count."""
    async with clients_for(server, clients, 60) as handles:
        await asyncio.gather(*(_post(h, server, "hi") for h in handles[:16]))  # warm-up
        latencies: list[float] = []
        errors = 0
        issued = 0
        deadline = time.monotonic() + seconds

        async def loop(handle: Any) -> None:
            nonlocal errors, issued
            while issued < max_requests and time.monotonic() < deadline:
                issued += 1
                took, ok = await _post(handle, server, "hi")
                if ok:
                    latencies.append(took)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(loop(h) for h in handles))
        wall = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_s": wall,
        "rps": len(latencies) / wall,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def burst(server: Server, turns: int, prompt: str, timeout: float) -> dict[str, Any]:
    """``turns`` turns at once, each on its own connection, none waiting longer than ``timeout``.

    Meanwhile a separate process (so the load generator's busy loop does not inflate the figures) polls
    ``/health`` every 50 ms and samples the server's RSS.
    """
    samples = Path(tempfile.mkstemp(prefix="bench-probe-", suffix=".json")[1])
    probe = subprocess.Popen(
        [PY, __file__, "--probe", server.url, str(server.proc.pid), str(samples)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    # The probe's connection is made before the burst: made during it, it would queue behind a thousand
    # connects in the listen backlog (a dropped SYN is retried after 1 s, then 3 s), which measures the
    # kernel's backlog, not how fast the host answers /health.
    probe.stdout.readline()
    bodies = [signed_body(prompt, server.address) for _ in range(turns)]
    try:
        async with clients_for(server, turns, timeout) as handles:
            began, t0 = time.perf_counter(), time.time()
            results = await asyncio.gather(*(h.post(body) for h, body in zip(handles, bodies)))
            wall = time.perf_counter() - began
    finally:
        probe.stdin.close()
        probe.wait(30)
    data = json.loads(samples.read_text() or "{}")
    samples.unlink()
    health = data.get("health", [])
    # The five slowest probes: (seconds after the burst began, ms), to see where in the burst they fell.
    slowest = sorted(zip(data.get("at", []), health), key=lambda p: -p[1])[:5]
    return {
        "turns": turns,
        "ok": sum(results),
        "errors": turns - sum(results),
        "wall_s": wall,
        "slowest_health": [(round(a - t0, 2), round(h * 1000, 1)) for a, h in slowest],
        "health_p99_ms": pct(health, 0.99) * 1000,
        "health_samples": len(health),
        "health_errors": data.get("errors", 0),
        "rss_peak_mib": data.get("rss_peak", 0) / 2**20,
    }


def probe_main(url: str, pid: int, out: str) -> None:
    """``--probe``: GET /health every 50 ms and sample RSS until stdin closes; write the samples as JSON.

    Prints ``ready`` after its first request (the burst starts then, on an open keep-alive connection)."""
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    server = Server.__new__(Server)
    server.proc = psutil.Process(pid)
    health: list[float] = []
    at: list[float] = []  # wall-clock start of each answered probe (the timeline of slow ones)
    errors = 0
    rss_peak = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not done.is_set():
            began, wall = time.perf_counter(), time.time()
            try:
                ok = client.get("/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                health.append(time.perf_counter() - began)
                at.append(wall)
            else:
                errors += 1
            if len(health) + errors == 1:
                print("ready", flush=True)
            rss_peak = max(rss_peak, server.rss())
            done.wait(0.05)
    Path(out).write_text(json.dumps({"health": health, "at": at, "errors": errors, "rss_peak": rss_peak}))


# ───────────────────────────── scenarios ─────────────────────────────


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: statistics.median(run[k] for run in runs) for k in keys} | {"runs": runs}


def say(text: str) -> None:
    print(text, flush=True)


def l5(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for clients in (1, 8, 64):
        for kind in L5_KINDS:
            runs = []
            for _ in range(args.repeats):
                with Server(kind) as server:
                    runs.append(asyncio.run(throughput(server, clients, args.seconds, args.requests)))
            out[f"{kind}@{clients}"] = median_of(runs)
            m = out[f"{kind}@{clients}"]
            say(
                f"  L5 {kind:9} {clients:3} clients: {m['rps']:8.1f} req/s  p50 {m['p50_ms']:7.1f} ms"
                f"  p99 {m['p99_ms']:7.1f} ms  errors {m['errors']:.0f}"
            )
    return out


def w2(args: argparse.Namespace) -> dict[str, Any]:
    """Ours with ``--workers 2`` against one worker, same clients and points (the generator shares the cores)."""
    out: dict[str, Any] = {}
    for clients in (8, 64):
        for workers in (1, 2):
            runs = []
            for _ in range(args.repeats):
                with Server("ours", extra=("--workers", str(workers))) as server:
                    runs.append(asyncio.run(throughput(server, clients, args.seconds, args.requests)))
            m = out[f"{workers}@{clients}"] = median_of(runs)
            say(
                f"  W2 ours {workers} worker(s) {clients:3} clients: {m['rps']:8.1f} req/s  p50 {m['p50_ms']:7.1f} ms"
                f"  p99 {m['p99_ms']:7.1f} ms  errors {m['errors']:.0f}"
            )
        out[f"ratio@{clients}"] = out[f"2@{clients}"]["rps"] / out[f"1@{clients}"]["rps"]
    return out


def burst_scenario(
    name: str,
    args: argparse.Namespace,
    turns: int,
    prompt: str,
    timeout: float,
    ours_extra: tuple[str, ...] = (),
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        runs = []
        for _ in range(args.repeats if kind != "reference" else args.reference_repeats):
            extra = ours_extra if kind == "ours" else ()
            with Server(kind, agent="sleep", extra=extra) as server:
                cap = min(timeout, args.reference_cap) if kind == "reference" else timeout
                runs.append(asyncio.run(burst(server, turns, prompt, cap)))
        out[kind] = median_of(runs)
        m = out[kind]
        say(
            f"  {name} {kind:9}: {m['ok']:.0f}/{turns} ok in {m['wall_s']:6.2f} s  /health p99 "
            f"{m['health_p99_ms']:7.1f} ms  RSS peak {m['rss_peak_mib']:6.1f} MiB"
            f"  slowest /health (s into the burst, ms): {runs[-1]['slowest_health']}"
        )
    return out


def prefill(folder: Path, records: int) -> None:
    co = folder / ".co"
    co.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with open(co / "session_results.jsonl", "w") as fh:
        for i in range(records):
            sid = str(uuid.UUID(int=i + 1))
            session = {
                "session_id": sid,
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
                "trace": [],
                "turn": 1,
            }
            fh.write(
                json.dumps(
                    {
                        "session_id": sid,
                        "prompt": "hi",
                        "status": "done",
                        "result": "ok",
                        "created": now,
                        "expires": now + 86400,
                        "duration_ms": 1,
                        "session": session,
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )


def l6(args: argparse.Namespace, fresh: dict[str, Any]) -> dict[str, Any]:
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-l6-") as tmp:
            folder = Path(tmp)
            prefill(folder, args.stored)
            size = (folder / ".co" / "session_results.jsonl").stat().st_size
            with Server("ours", folder=folder) as server:
                run = asyncio.run(throughput(server, 8, args.seconds, args.requests))
                run["start_s"] = server.start_seconds
                run["file_mib"] = size / 2**20
            runs.append(run)
    out = median_of(runs)
    out["fresh_rps"] = fresh["rps"]
    out["ratio"] = out["rps"] / fresh["rps"]
    say(
        f"  L6 ours after {args.stored} stored turns: {out['rps']:.1f} req/s vs fresh {fresh['rps']:.1f}"
        f" ({out['ratio']:.2f}x), start-up {out['start_s']:.1f} s"
    )
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and b == b and a == a else "n/a"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| scenario | metric | ours | reference 1.9.2 | floor | ours/reference | ours/floor |",
        "|---|---|---|---|---|---|---|",
    ]
    l5r = results.get("L5")
    for clients in (1, 8, 64) if l5r else ():
        o, r, f = (l5r[f"{k}@{clients}"] for k in KINDS)
        lines.append(
            f"| L5 POST /input, {clients} clients | req/s | {o['rps']:.0f} | {r['rps']:.0f} | {f['rps']:.0f}"
            f" | {ratio(o['rps'], r['rps'])} | {ratio(o['rps'], f['rps'])} |"
        )
        for key in ("p50_ms", "p99_ms"):
            lines.append(
                f"| | {key[:3]} ms | {o[key]:.1f} | {r[key]:.1f} | {f[key]:.1f}"
                f" | {ratio(o[key], r[key])} | {ratio(o[key], f[key])} |"
            )
        lines.append(f"| | errors | {o['errors']:.0f} | {r['errors']:.0f} | {f['errors']:.0f} | | |")
    stack: list[str] = []
    if l5r:
        stack += [
            "",
            "Stack floor (stock Django 5.2 + daphne, one async view, fixed answer, no work):",
            "",
            "| clients | stack req/s | stack p99 ms | stack/reference | stack/floor | ours/stack |",
            "|---|---|---|---|---|---|",
        ]
        for clients in (1, 8, 64):
            o, r, f, st = (l5r[f"{k}@{clients}"] for k in L5_KINDS)
            stack.append(
                f"| {clients} | {st['rps']:.0f} | {st['p99_ms']:.1f} | {ratio(st['rps'], r['rps'])}"
                f" | {ratio(st['rps'], f['rps'])} | {ratio(o['rps'], st['rps'])} |"
            )
    for name, label in (("L2", "L2 100 × 3 s turns"), ("L1", "L1 1,000 × 1 s turns")):
        block = results.get(name)
        if not block:
            continue
        o, r, f = (block.get(k, {}) for k in KINDS)
        nan = float("nan")
        for key, metric, fmt in (
            ("wall_s", "wall s", "{:.2f}"),
            ("ok", "completed", "{:.0f}"),
            ("health_p99_ms", "/health p99 ms", "{:.1f}"),
            ("rss_peak_mib", "RSS peak MiB", "{:.0f}"),
        ):
            vals = [d.get(key, nan) for d in (o, r, f)]
            cells = [fmt.format(v) if v == v else "-" for v in vals]
            lines.append(
                f"| {label if key == 'wall_s' else ''} | {metric} | {cells[0]} | {cells[1]} | {cells[2]}"
                f" | {ratio(vals[0], vals[1])} | {ratio(vals[0], vals[2])} |"
            )
    w2r = results.get("W2")
    for clients in (8, 64) if w2r else ():
        one, two = w2r[f"1@{clients}"], w2r[f"2@{clients}"]
        lines.append(
            f"| W2 ours, 2 workers vs 1, {clients} clients | req/s | {two['rps']:.0f} (1 worker: {one['rps']:.0f},"
            f" {w2r[f'ratio@{clients}']:.2f}x) | - | - | | |"
        )
        lines.append(f"| | p99 ms | {two['p99_ms']:.1f} (1 worker: {one['p99_ms']:.1f}) | - | - | | |")
    l6r = results.get("L6")
    if l6r:
        lines.append(
            f"| L6 8 clients after {results['config']['stored']:,} stored turns | req/s | {l6r['rps']:.0f}"
            f" (fresh {l6r['fresh_rps']:.0f}, {l6r['ratio']:.2f}x) | - | - | | |"
        )
        lines.append(f"| | start-up s | {l6r['start_s']:.1f} ({l6r['file_mib']:.0f} MiB file) | - | - | | |")
    return "\n".join(lines + stack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~2 min subset: 1 repeat, shorter points, smaller L1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--reference-repeats",
        type=int,
        help="repeats of the reference L1/L2 bursts, each capped by --reference-cap (default 1)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="max seconds per L5 point")
    parser.add_argument("--requests", type=int, default=2000, help="max requests per L5 point")
    parser.add_argument("--l1-turns", type=int, default=1000)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--only", help="comma list of L5,L2,L1,L6,W2")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="load generator's HTTP client")
    parser.add_argument(
        "--reference-cap",
        type=float,
        default=30.0,
        help="seconds a reference burst turn may wait (it runs turns one at a time)",
    )
    parser.add_argument(
        "--store", choices=["jsonl", "postgres"], default="jsonl", help="our host's result store (issue 18)"
    )
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/test",
        help="with --store postgres: the database (its results table is shared by every point of the run)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "results.json"))
    if len(sys.argv) == 5 and sys.argv[1] == "--probe":
        probe_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    args = parser.parse_args()
    global CLIENT, STORE
    CLIENT = args.client
    if args.store == "postgres":
        STORE = ("--store", "postgres", "--database-url", args.database_url)
    if args.quick:
        args.repeats, args.seconds, args.requests, args.l1_turns = 1, 2.0, 1000, 300
        args.reference_cap = min(args.reference_cap, 15.0)
    if args.reference_repeats is None:
        args.reference_repeats = 1
    only = set((args.only or "L5,L2,L1,L6,W2").upper().split(","))

    started = time.time()
    results: dict[str, Any] = {
        "config": vars(args)
        | {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(),
            "machine": platform.platform(),
            "python": platform.python_version(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
    }
    if "L5" in only or "L6" in only:
        say("L5: POST /input, instant agent")
        results["L5"] = l5(args)
    if "L2" in only:
        say("L2: 100 concurrent 3 s turns")
        results["L2"] = burst_scenario("L2", args, 100, "sleep 3", 60)
    if "L1" in only:
        say(f"L1: {args.l1_turns} concurrent 1 s turns (ours with --pool-size 1000)")
        results["L1"] = burst_scenario("L1", args, args.l1_turns, "sleep 1", 120, ours_extra=("--pool-size", "1000"))
    if "L6" in only:
        say(f"L6: ours after {args.stored} stored turns")
        results["L6"] = l6(args, results["L5"]["ours@8"])
    if "W2" in only:
        say("W2: ours, --workers 2 vs 1 worker")
        results["W2"] = w2(args)
    results["elapsed_s"] = time.time() - started
    text = table(results)
    print()
    print(text)
    print(f"\n{args.repeats} repeat(s), medians; {results['elapsed_s']:.0f} s in all")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results | {"table": text}, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
