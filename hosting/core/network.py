"""Which names and addresses this host answers to: ALLOWED_HOSTS, origins and announced endpoints."""

from __future__ import annotations

import socket
from functools import lru_cache

from hosting.core.config import HostConfig

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


@lru_cache(maxsize=1)
def local_addresses() -> tuple[str, ...]:
    """Non-loopback IPv4 addresses of this machine (best effort, no packets sent)."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(info[4][0])
    except OSError:
        pass
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # UDP connect only picks a route; nothing is sent
        found.add(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    return tuple(sorted(a for a in found if not a.startswith("127.")))


def allowed_hosts(cfg: HostConfig) -> list[str]:
    """Loopback names, LAN addresses when bound beyond loopback, and the public domain (D22)."""
    hosts = [*LOOPBACK_NAMES, "testserver"]
    if cfg.bind not in ("127.0.0.1", "localhost", "::1"):
        hosts.extend(local_addresses())
        if cfg.bind not in ("0.0.0.0", "::"):
            hosts.append(cfg.bind)
    if cfg.public_domain:
        hosts.append(cfg.public_domain)
    return hosts


def allowed_host(host: str) -> bool:
    """D22: is ``host`` (a ``Host`` header, maybe with a port) one of ``ALLOWED_HOSTS``? Django's own check,
    for the WebSocket upgrade, which Django's request machinery never sees."""
    from django.conf import settings
    from django.http.request import split_domain_port, validate_host

    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def allowed_origin(origin: str, cfg: HostConfig, request_host: str | None = None) -> bool:
    """D22: loopback origins, our own host, the public domain and host.yaml ``allowed_origins``.

    An ``Origin`` equal to ``request_host`` counts only when that host is itself allowed: a DNS-rebinding
    page sends its own name as both.
    """
    from urllib.parse import urlsplit

    if origin in cfg.allowed_origins or "*" in cfg.allowed_origins:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    name = parts.hostname
    if name in ("localhost", "127.0.0.1", "::1"):
        return True
    if cfg.public_domain and name == cfg.public_domain:
        return True
    return bool(request_host and parts.netloc == request_host and allowed_host(request_host))
