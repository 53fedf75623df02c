"""The Redis channel layer's host entry, shared by the host's and the relay's settings.

channels_redis waits on ``BZPOPMIN`` for up to ``brpop_timeout`` (5 s) when a channel is idle, and redis-py 8
gives every socket a 5 s read timeout by default: the two race, so an idle receive fails with "Timeout reading"
every few seconds (the bridge logged it, a relay consumer's receive loop died of it). The socket's read timeout
is set well above the blocking wait; calls that must not hang bound themselves (``hosting.core.bridge``).
"""

from __future__ import annotations

SOCKET_TIMEOUT = 20.0  # seconds: above channels_redis's 5 s blocking wait


def redis_host(url: str) -> dict[str, object]:
    return {"address": url, "socket_timeout": SOCKET_TIMEOUT}
