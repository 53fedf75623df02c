"""What a trust decision is made of: the settings of the policy's model, the facts of one request, the
decision, and the gate's admission of a request (``Admission``). Plain data (no I/O): ``trust.judges`` asks
the model, ``trust.policy`` decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError

LEVELS = ("open", "careful", "strict")
UNAVAILABLE = "misconfigured: trust agent unavailable"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
PROMPT_CHARS = 4000  # the judge needs the gist of a prompt, not a 1 MB upload
REASON_CHARS = 200


# --- settings: the only environment reads of this module ----------------------------------------------


@dataclass(frozen=True)
class TrustSettings:
    """How a natural-language policy reaches its model, and how long answers are trusted."""

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str = DEFAULT_MODEL
    timeout: float = 10.0
    cache_ttl: float = 300.0
    # Values a policy may reference as ``$NAME`` (invite codes, prices); never printed.
    variables: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (got {raw!r})") from None
    if not value > 0:
        raise ConfigError(f"{name} must be positive (got {raw!r})")
    return value


def trust_settings(environ: Mapping[str, str]) -> TrustSettings:
    """Build ``TrustSettings`` from an environment mapping (pass ``os.environ`` once, at start-up).

    Reads ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``CONNECTONION_TRUST_MODEL`` (default gpt-4o-mini),
    ``CONNECTONION_TRUST_TIMEOUT`` (10 s) and ``CONNECTONION_TRUST_CACHE_TTL`` (300 s).
    """
    return TrustSettings(
        base_url=(environ.get("OPENAI_BASE_URL") or "").strip() or None,
        api_key=environ.get("OPENAI_API_KEY") or None,
        model=(environ.get("CONNECTONION_TRUST_MODEL") or "").strip() or DEFAULT_MODEL,
        timeout=_positive(environ, "CONNECTONION_TRUST_TIMEOUT", 10.0),
        cache_ttl=_positive(environ, "CONNECTONION_TRUST_CACHE_TTL", 300.0),
        variables=dict(environ),
    )


# --- requests and decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustRequest:
    """The facts a policy decides on. ``identity`` is None for an anonymous caller."""

    identity: str | None
    sig_valid: bool
    level: str
    prompt: str | None = None
    invite_code: str | None = None
    transport: str = "http"


@dataclass(frozen=True)
class Decision:
    accept: bool
    reason: str
    source: str  # "rule", "model" or "cache"


@dataclass(frozen=True)
class Admission:
    """An admitted request. ``signer`` None means anonymous; act on ``payload`` only."""

    signer: str | None
    payload: dict[str, Any] = field(repr=False)
    signed: bool
    level: str  # the caller's list level: whitelist, contact or stranger
    reason: str
    repeated: bool = False  # the ledger had seen it and allow_repeat accepted it (D20)
    # D20 (amended): a repeated handshake proves nothing about who sent it. An unproven socket reveals nothing
    # of any session until a freshly signed command from ``signer`` arrives on it (PROTOCOL §2.4).
    unproven: bool = False
    trust: str = "careful"  # the trust level in force: open, careful, strict or custom
