"""PROTOCOL §2.1 signed envelopes, built the way a client builds them."""

from __future__ import annotations

import time
import uuid
from typing import Any

from nacl.signing import SigningKey

from trust.signing import sign_payload


def signed(
    key: SigningKey, to: str | None, *, timestamp: float | None = None, nonce: bool = False, **fields: Any
) -> dict[str, Any]:
    """An envelope over ``fields`` plus ``to`` (left out when None) and ``timestamp`` (now when None, as an
    integer); ``nonce=True`` adds a fresh one."""
    payload: dict[str, Any] = dict(fields)
    payload["timestamp"] = int(time.time()) if timestamp is None else timestamp
    if nonce:
        payload["nonce"] = uuid.uuid4().hex
    if to is not None:
        payload["to"] = to
    return sign_payload(key, payload)
