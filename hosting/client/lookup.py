"""Where an agent is: its relay record, its announced endpoints in order, and which links need no seal
(PROTOCOL §8.3)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import httpx

from hosting.relay import wire

LOOKUP_TIMEOUT = 3.0
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def sort_endpoints(endpoints: list[str]) -> list[str]:
    """Loopback first, then private networks, then the rest; TLS first at equal distance (PROTOCOL §8.3)."""

    def rank(url: str) -> tuple[int, int]:
        host = urlsplit(url).hostname or ""
        if host in _LOOPBACK or host.startswith("127."):
            distance = 0
        else:
            try:
                distance = 1 if ipaddress.ip_address(host).is_private else 2
            except ValueError:
                distance = 2
        return distance, 0 if url.startswith(("https://", "wss://")) else 1

    return sorted(endpoints, key=rank)


def private_link(url: str) -> bool:
    """TLS anywhere, or plaintext to loopback: where a signed frame may go without sealing (§8.3 step 5)."""
    parts = urlsplit(url)
    return parts.scheme in ("https", "wss") or (parts.hostname or "") in _LOOPBACK


def ws_origin(http_url: str) -> str:
    parts = urlsplit(http_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}/ws"


async def resolve_direct(address: str, relay: str, *, signed: bool = False) -> str | None:
    """The agent's own WebSocket URL from the relay record, or ``None`` (then use the relay).

    Plaintext endpoints beyond loopback are candidates even for a signed caller: the socket is sealed before
    anything signed goes onto it, and dropped if the host cannot seal (``AsyncRemoteAgent._open``).
    ``signed`` is kept for callers of the old signature; it no longer narrows the list."""
    async with httpx.AsyncClient(timeout=LOOKUP_TIMEOUT) as client:
        try:
            response = await client.get(f"{wire.http_base(relay)}/api/agents/{address}")
            info = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        endpoints = info.get("endpoints") if isinstance(info, dict) else None
        if not isinstance(endpoints, list) or info.get("online") is False:
            return None
        for url in sort_endpoints([e for e in endpoints if isinstance(e, str)]):
            if not url.startswith(("http://", "https://")):
                continue
            try:
                reply = await client.get(url.rstrip("/") + "/info")
                found = reply.json().get("address") if reply.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
            if isinstance(found, str) and found.lower() == address.lower():
                return ws_origin(url)
    return None
