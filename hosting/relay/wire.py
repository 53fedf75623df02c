"""Relay wire facts shared by the agent-side link, our relay server and our client (PROTOCOL §8).

URL forms (D9), the signed ANNOUNCE (§8.1: signature over ``json.dumps(msg, sort_keys=True)`` with
Python's *default* separators, ``profile_signature`` over the compact canonical text), the endpoints an
agent announces, and the relay's verification of an ANNOUNCE. Plain Python: no Django.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from nacl.signing import SigningKey

from hosting.core.config import DEFAULT_RELAY_URL, HostConfig
from trust.identity import is_address
from trust.signing import signature_valid as strict_signature_valid

ANNOUNCE_PATH = "/ws/announce"
INPUT_PATH = "/ws/input"
SUMMARY_LIMIT = 1000
RELAY_FEATURES = ("conn_id",)
PUBLIC_RELAY_BASE = "wss://oo.openonion.ai"
# Bounds on what a relay keeps for one agent (ours, not the spec's): a record is served to anyone.
MAX_ENDPOINTS = 32
MAX_ENDPOINT_CHARS = 512
MAX_ANNOUNCE_CHARS = 1024 * 1024

_SIGNATURE = re.compile(r"(?:0x)?[0-9a-fA-F]{128}")
_LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1")
_WILDCARD_BINDS = ("0.0.0.0", "::", "")

# Relay answers to a refused ANNOUNCE. The first two are the public relay's texts (PROTOCOL §8.2);
# the others are ours (P).
INVALID_SIGNATURE = "Invalid signature"
SUMMARY_TOO_LONG = f"Summary too long (max {SUMMARY_LIMIT} chars)"
TIMESTAMP_EXPIRED = "Timestamp expired (more than the allowed window from the relay clock)"
INVALID_ANNOUNCE = "Invalid announce"
WRONG_RELAY = "Wrong relay: this announce is signed for {signed}, this relay is {expected}"  # (P) D28


class Signer(Protocol):
    """What we need of an identity: ``trust.identity.AgentIdentity`` fits, so does any key holder."""

    @property
    def address(self) -> str: ...

    @property
    def signing_key(self) -> SigningKey: ...


class AnnounceRejected(ValueError):
    """An ANNOUNCE the relay refuses; ``error`` is the text for ``{"type":"ERROR","error":…}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


# --- addresses and signatures ----------------------------------------------------------------------


def sign_hex(signer: Signer, data: bytes) -> str:
    """Ed25519 signature of ``data`` as 128 lowercase hex digits, no ``0x`` (PROTOCOL §1.3)."""
    return signer.signing_key.sign(data).signature.hex()


def signature_valid(address: str, data_forms: Iterable[bytes], signature: object) -> bool:
    """Does ``signature`` (hex, optional ``0x``) verify over any of ``data_forms`` under ``address``?

    The check itself is ``trust.signing.signature_valid`` (strict: S < L, no small-order keys), the one
    Ed25519 verifier of every path."""
    if not is_address(address) or not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        return False
    raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    public_key = bytes.fromhex(address[2:])
    return any(strict_signature_valid(public_key, data, raw) for data in data_forms)


def compact_text(obj: Any, *, ascii_only: bool = True) -> bytes:
    """The canonical text of PROTOCOL §2.2: sorted keys at every depth, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only).encode("utf-8")


def announce_text(message: dict[str, Any]) -> bytes:
    """What an ANNOUNCE ``signature`` covers: Python's default separators on purpose (PROTOCOL §8.1)."""
    return json.dumps(message, sort_keys=True).encode("utf-8")


# --- relay URLs (D9) -------------------------------------------------------------------------------


def relay_base(url: str | None) -> str | None:
    """The relay base URL for a configured ``relay_url``; ``None`` when the relay is disabled.

    ``wss://r``, ``wss://r/`` and ``wss://r/ws/announce`` all give ``wss://r``. ``http(s)://`` is
    accepted and turned into ``ws(s)://`` (a backend origin names the same relay).
    """
    if url is None:
        return None
    url = url.strip()
    if not url:
        return None
    if url.startswith("https://"):
        url = "wss://" + url[len("https://") :]
    elif url.startswith("http://"):
        url = "ws://" + url[len("http://") :]
    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"relay_url must start with ws:// or wss:// (got {url!r})")
    url = url.rstrip("/")
    if url.endswith(ANNOUNCE_PATH):
        url = url[: -len(ANNOUNCE_PATH)].rstrip("/")
    return url


def relay_identity(url: object) -> tuple[str, str, int, str] | None:
    """What two relay URLs must share to name the same relay (D28): scheme, host (any case), port (the
    scheme's default when absent) and path (after D9's ``/ws/announce`` is removed). ``None`` if not a
    relay URL."""
    if not isinstance(url, str):
        return None
    try:
        base = relay_base(url)
        if base is None:
            return None
        parts = urlsplit(base)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        return None
    if not parts.hostname or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname.lower(), port, parts.path.rstrip("/")


def same_relay(first: object, second: object) -> bool:
    """Do two URLs name the same relay? (``ws://R:80/ws/announce`` and ``WS://r`` do.)"""
    one = relay_identity(first)
    return one is not None and one == relay_identity(second)


_RESOLVED: dict[str, tuple[float, frozenset[str]]] = {}
RESOLVE_TTL = 60.0


async def names_socket(scheme: str, host: str, server: tuple[str, int]) -> bool:
    """Does a ``Host`` header name the socket ``server`` (``(address, port)``) a connection arrived on? The port
    (the scheme's default when absent) must be that socket's, and the name that address or resolve to it."""
    identity = relay_identity(f"{scheme}://{host}")
    if identity is None:
        return False
    _, name, port, _ = identity
    address, local_port = server
    if port != local_port:
        return False
    try:
        return ipaddress.ip_address(name.strip("[]")) == ipaddress.ip_address(address)
    except ValueError:
        pass
    return str(ipaddress.ip_address(address)) in await _addresses(name)


async def _addresses(name: str) -> frozenset[str]:
    now = time.monotonic()
    cached = _RESOLVED.get(name)
    if cached is not None and cached[0] > now:
        return cached[1]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, None)
        found = frozenset(str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos)
    except (OSError, ValueError, UnicodeError):
        found = frozenset()
    if len(_RESOLVED) >= 1024:
        _RESOLVED.clear()
    _RESOLVED[name] = (now + RESOLVE_TTL, found)
    return found


def default_relay_base() -> str:
    """The relay used when none is configured (``HostConfig`` already folds in the backend URL)."""
    base = relay_base(DEFAULT_RELAY_URL)
    assert base is not None
    return base


def announce_url(base: str) -> str:
    return base + ANNOUNCE_PATH


def input_url(base: str) -> str:
    return base + INPUT_PATH


def http_base(base: str) -> str:
    """``wss://r`` → ``https://r`` and ``ws://r`` → ``http://r`` (for ``/api/agents/…``)."""
    if base.startswith("wss://"):
        return "https://" + base[len("wss://") :]
    if base.startswith("ws://"):
        return "http://" + base[len("ws://") :]
    return base


def is_public_relay(base: str | None) -> bool:
    """True when announcing to the default public relay (the banner then links the chat site)."""
    return base == PUBLIC_RELAY_BASE


# --- what the agent announces ----------------------------------------------------------------------


def fit_summary(summary: str | None, *, name: str | None = None) -> str:
    """The ANNOUNCE summary: the given text cut to 1000 characters, else ``"<name> agent"``."""
    text = (summary or "").strip() or f"{name or 'connectonion'} agent"
    return text[:SUMMARY_LIMIT]


def endpoints_for(config: HostConfig, *, addresses: Sequence[str] | None = None) -> list[str]:
    """The endpoints to announce for this host (PROTOCOL §8.1, D11).

    With ``AGENT_PUBLIC_DOMAIN``: exactly ``https://<d>`` and ``wss://<d>/ws``. Otherwise
    ``http://<ip>:<port>`` + ``ws://<ip>:<port>/ws`` for every address the server really listens on:
    ``localhost`` (if ``announce_loopback``) when bound to loopback or to all interfaces, and the
    non-loopback interface addresses only when bound to all interfaces (or the one bound address).
    ``addresses`` overrides interface discovery (tests).
    """
    if config.public_domain:
        domain = config.public_domain.strip().rstrip("/")
        for prefix in ("https://", "http://"):
            if domain.startswith(prefix):
                domain = domain[len(prefix) :]
        return [f"https://{domain}", f"wss://{domain}/ws"]

    bind = (config.bind or "").strip()
    hosts: list[str] = []
    if config.announce_loopback and (bind in _LOOPBACK_BINDS or bind in _WILDCARD_BINDS):
        hosts.append("localhost")
    if bind in _WILDCARD_BINDS:
        if addresses is None:
            from hosting.core.network import local_addresses

            addresses = local_addresses()
        hosts.extend(a for a in addresses if not a.startswith("127.") and a != "::1")
    elif bind not in _LOOPBACK_BINDS:
        hosts.append(bind)

    endpoints: list[str] = []
    for host in dict.fromkeys(hosts):  # keep order, drop repeats
        netloc = f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"
        endpoints += [f"http://{netloc}", f"ws://{netloc}/ws"]
    return endpoints


def build_announce(
    identity: Signer,
    *,
    endpoints: Sequence[str],
    summary: str,
    profile: dict[str, Any] | None,
    relay_base: str | None,
    now: float,
) -> dict[str, Any]:
    """A freshly signed ANNOUNCE (PROTOCOL §8.1); build a new one for every send, never re-stamp.

    ``timestamp`` is ``int(now)``. ``profile`` (when given) gets its own ``profile_signature`` over the
    compact canonical text; ``signature`` covers every other field under Python's default separators.
    """
    message: dict[str, Any] = {
        "type": "ANNOUNCE",
        "address": identity.address,
        "timestamp": int(now),
        "summary": summary[:SUMMARY_LIMIT],
        "endpoints": list(endpoints),
        "relay": relay_base,
        "relay_features": list(RELAY_FEATURES),
    }
    if profile is not None:
        message["profile"] = profile
        message["profile_signature"] = sign_hex(identity, compact_text(profile))
    message["signature"] = sign_hex(identity, announce_text(message))
    return message


# --- what the relay checks -------------------------------------------------------------------------


def _announce_fields(message: Any, now: float, window: float) -> tuple[str, float, Any, list, Any, list]:
    """The fields of an ANNOUNCE, each checked for type, size and (the timestamp) the window."""
    if not isinstance(message, dict) or message.get("type") != "ANNOUNCE":
        raise AnnounceRejected(INVALID_ANNOUNCE)
    address = message.get("address")
    if not is_address(address):
        raise AnnounceRejected(INVALID_SIGNATURE)
    timestamp = message.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not math.isfinite(timestamp):
        raise AnnounceRejected(INVALID_ANNOUNCE)
    if abs(now - timestamp) > window:
        raise AnnounceRejected(TIMESTAMP_EXPIRED)
    summary = message.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise AnnounceRejected(INVALID_ANNOUNCE)
    if summary is not None and len(summary) > SUMMARY_LIMIT:
        raise AnnounceRejected(SUMMARY_TOO_LONG)
    endpoints = message.get("endpoints") or []
    if (
        not isinstance(endpoints, list)
        or len(endpoints) > MAX_ENDPOINTS
        or not all(isinstance(e, str) and len(e) <= MAX_ENDPOINT_CHARS for e in endpoints)
    ):
        raise AnnounceRejected(INVALID_ANNOUNCE)
    relay = message.get("relay")
    features = message.get("relay_features") or []
    if (relay is not None and not isinstance(relay, str)) or not isinstance(features, list):
        raise AnnounceRejected(INVALID_ANNOUNCE)

    return address, timestamp, summary, endpoints, relay, features


def verify_announce(message: Any, now: float, window: float, *, this_relay: str | None = None) -> dict[str, Any]:
    """Check an ANNOUNCE as our relay does (PROTOCOL §8.2) and return the fields it stores.

    ``this_relay`` is this relay's own URL: the signed ``relay`` field must name it (D28), so an ANNOUNCE
    captured by one relay cannot register the agent at another. ``None`` skips that check (tests of the
    other fields only).

    Returns ``{address (lowercase), timestamp, summary, endpoints, relay, profile, relay_features}``.
    Raises ``AnnounceRejected`` with the ERROR text: ``Invalid signature`` for a bad address, signature
    or profile signature; ``Summary too long (max 1000 chars)``; an expiry text for a timestamp more
    than ``window`` seconds from ``now``; ``Invalid announce`` for a malformed field.
    """
    address, timestamp, summary, endpoints, relay, features = _announce_fields(message, now, window)
    unsigned = {k: v for k, v in message.items() if k != "signature"}
    if not signature_valid(address, (announce_text(unsigned), compact_text(unsigned)), message.get("signature")):
        raise AnnounceRejected(INVALID_SIGNATURE)
    profile = message.get("profile")
    if profile is not None:
        forms = (compact_text(profile), compact_text(profile, ascii_only=False))
        if not isinstance(profile, dict) or not signature_valid(address, forms, message.get("profile_signature")):
            raise AnnounceRejected(INVALID_SIGNATURE)
    if this_relay is not None and not same_relay(relay, this_relay):
        shown = repr(relay[:200]) if isinstance(relay, str) else repr(relay)
        raise AnnounceRejected(WRONG_RELAY.format(signed=shown, expected=repr(this_relay)))

    return {
        "address": address.lower(),
        "timestamp": timestamp,
        "summary": summary or "",
        "endpoints": list(endpoints),
        "relay": relay,
        "profile": profile,
        "relay_features": [f for f in features if isinstance(f, str)],
    }
