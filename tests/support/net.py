"""Loopback ports and the shared services (Redis) the tests may need."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
import ssl
import time

REDIS = ("127.0.0.1", 6379)
# Ports handed to servers come from below the kernel's ephemeral range (32768-60999 by default), where no
# outgoing connection takes one between our check and the server's bind, and each pytest-xdist worker
# (PYTEST_XDIST_WORKER=gw<N>) has a block of its own, so two workers never pick the same port.
PORT_BLOCK = 1200
_worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 10
_block = list(range(20000 + _worker * PORT_BLOCK, 20000 + (_worker + 1) * PORT_BLOCK))
_start = random.randrange(PORT_BLOCK)  # two test sessions at once (two worktrees) start apart in the block
_candidates = itertools.cycle(_block[_start:] + _block[:_start])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to now, from this worker's own block."""
    for _ in range(PORT_BLOCK):
        port = next(_candidates)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in this worker's block of {PORT_BLOCK}")


def redis_up(address: tuple[str, int] = REDIS) -> bool:
    """Whether a Redis answers PING there (tests that need it skip, with that reason, when not)."""
    try:
        with socket.create_connection(address, timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def drip_until_answered(sock: socket.socket, drip: bytes, *, limit: float) -> bytes:
    """A slow client: send ``drip`` every 0.2 s the server stays silent, collecting what it answers until it
    closes (or ``limit`` seconds pass: a guard against a hung test, not a measurement)."""
    sock.settimeout(0.2)
    answer = b""
    give_up = time.monotonic() + limit
    while time.monotonic() < give_up:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            with contextlib.suppress(OSError):
                sock.sendall(drip)
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
    return answer


def exchange(port: int, request: bytes, more: bytes = b"", *, timeout: float = 10) -> bytes:
    """Send raw bytes to 127.0.0.1:``port`` (then ``more``, unless the server has closed on us) and return all
    it answers until it closes or stays silent for ``timeout`` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        with contextlib.suppress(OSError):  # closed on us: its answer is still in our receive buffer
            sock.sendall(more)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def share_httpx_ssl_context() -> None:
    """Build httpx's default SSL context once instead of once per client.

    httpx makes a fresh default context for every client, and so for every ``httpx.get``: parsing certifi's CA
    bundle, about 25 ms of CPU. The tests make thousands of plain-HTTP calls to loopback servers (readiness
    polling alone makes dozens per server started), which never use it. One context, built the same way and
    shared (an ``SSLContext`` may serve many connections), leaves every call as it was, at a fraction of the
    CPU; a client asking for anything but the default still gets a context of its own."""
    import functools

    from httpx._transports import default

    if getattr(default.create_ssl_context, "shared_default", False):
        return
    original = default.create_ssl_context

    @functools.cache
    def shared(cafile: str | None, capath: str | None) -> ssl.SSLContext:  # what httpx reads from the environment
        return original()

    def create_ssl_context(verify=True, cert=None, trust_env=True):
        if verify is True and cert is None and trust_env:
            return shared(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        return original(verify=verify, cert=cert, trust_env=trust_env)

    create_ssl_context.shared_default = True
    default.create_ssl_context = create_ssl_context
