"""Peak host memory while N large bodies arrive at once, with and without the bodies-in-flight budget
(issue 15.10, HARDENING L7): figures only, no assertions.

Each round starts a fresh host (echo agent, one file of ``--file-mb`` per request, so the request cap is about
2.7 × that), sends ``--bodies`` JSON bodies of ``--body-mb`` each at the same moment over raw sockets, and samples
the host's RSS every 20 ms until every answer is in. Statuses are counted: 400 is a body that was read and
parsed (its prompt is longer than the prompt cap), 503 a body refused by the budget before it was sent.

    .venv/bin/python bench/bodies_in_flight.py [--bodies 6] [--body-mb 100] [--file-mb 40] [--budget-mb 256]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from tests.conftest import NO_TURN_LIMITS, HostProcess

MiB = 1024 * 1024


def send_body(port: int, size: int) -> int:
    head = b'{"prompt": "'
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        sock.sendall(
            b"POST /input HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % size + head
        )
        block = b"a" * MiB
        left = size - len(head) - 2
        try:
            while left > 0:
                sock.sendall(block[: min(left, MiB)])
                left -= MiB
            sock.sendall(b'"}')
        except OSError:
            pass  # refused while sending: its answer is in the receive buffer
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def round_(args: argparse.Namespace, budget_mb: float) -> tuple[float, float, Counter]:
    with tempfile.TemporaryDirectory(prefix="bodies-bench-") as folder:
        host = HostProcess(
            Path(folder),
            "tests.agents:echo_factory",
            "--trust",
            "open",
            *NO_TURN_LIMITS,
            "--max-file-size",
            str(args.file_mb),
            "--max-files-per-request",
            "1",
            "--bodies-in-flight-mb",
            str(budget_mb),
        ).start()
        try:
            proc = psutil.Process(host.proc.pid)
            base = proc.memory_info().rss
            peak = base
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, proc.memory_info().rss)
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            with ThreadPoolExecutor(args.bodies) as pool:
                statuses = Counter(
                    pool.map(lambda _: send_body(host.port, int(args.body_mb * MiB)), range(args.bodies))
                )
            done.set()
            sampler.join()
            return base / MiB, peak / MiB, statuses
        finally:
            host.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=6)
    parser.add_argument("--body-mb", type=float, default=100)
    parser.add_argument("--file-mb", type=int, default=40)
    parser.add_argument("--budget-mb", type=float, default=256)
    args = parser.parse_args()
    print(f"{args.bodies} bodies of {args.body_mb:g} MiB at once")
    for label, budget in (("no budget (0)", 0.0), (f"budget {args.budget_mb:g} MiB", args.budget_mb)):
        base, peak, statuses = round_(args, budget)
        print(f"{label:<20} RSS {base:6.0f} → peak {peak:6.0f} MiB (+{peak - base:.0f})  answers {dict(statuses)}")


if __name__ == "__main__":
    main()
