"""Signed requests: canonical text, envelopes, signed HTTP headers and v2 commands (PROTOCOL §2).

Pure functions: no ledger, no lists, no Django. Every failure is raised as ``common.errors.Unauthorized``
with the exact text of PROTOCOL §2.3 / §2.5 / §2.6.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from common.errors import Unauthorized
from trust.identity import address_of, is_address

SIGNATURE_WINDOW = 300.0

# Ed25519 group order L; a signature's S must be below it (RFC 8032 §5.1.7, HARDENING S4).
_GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
_SIGNATURE_HEX = re.compile(r"[0-9a-fA-F]{128}")
_DECIMAL = re.compile(r"-?[0-9]{1,18}")

SIGNED_REQUEST_REQUIRED = "unauthorized: signed request required"
FROM_REQUIRED = "unauthorized: 'from' field required"
SIGNATURE_REQUIRED = "unauthorized: signature required"
TIMESTAMP_REQUIRED = "unauthorized: timestamp required in payload"
TIMESTAMP_NOT_NUMERIC = "unauthorized: timestamp must be numeric"
TIMESTAMP_NOT_FINITE = "unauthorized: timestamp must be finite"
EXPIRED = "unauthorized: signature expired"
WRONG_RECIPIENT = "unauthorized: wrong recipient"
INVALID_SIGNATURE = "unauthorized: invalid signature"
MALFORMED_HEADERS = "unauthorized: malformed signature headers"
REQUEST_ID_REQUIRED = "unauthorized: request id required"
COMMAND_REQUIRED = "unauthorized: signed command required"
COMMAND_NOT_OWNER = "unauthorized: command signer does not own this connection"
COMMAND_TYPE_MISMATCH = "unauthorized: signed command type mismatch"
COMMAND_NONCE_REQUIRED = "unauthorized: signed command nonce required"

HEADER_FROM = "x-co-from"
HEADER_SIGNATURE = "x-co-signature"
HEADER_TIMESTAMP = "x-co-timestamp"
HEADER_TO = "x-co-to"
HEADER_REQUEST_ID = "x-co-request-id"
SIGNING_HEADERS = (HEADER_FROM, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_TO, HEADER_REQUEST_ID)
# Released-host legacy shape (b), accepted on /admin/logs and /admin/sessions only (PROTOCOL §2.5).
LEGACY_HEADERS = ("x-from", "x-signature", "x-timestamp")


@dataclass(frozen=True)
class Verified:
    """A payload whose signature checked out: who signed it, what, and when."""

    signer: str
    payload: dict[str, Any]
    signature: bytes
    timestamp: float


# --- canonical text ---------------------------------------------------------------------------------


def canonical_forms(payload: dict[str, Any]) -> list[bytes]:
    """The byte strings a valid signature may cover, in order (PROTOCOL §2.2), without duplicates.

    1. sorted keys at every depth, no whitespace, non-ASCII escaped (what producers MUST sign);
    2. the same with non-ASCII left literal (browsers);
    3. legacy: only top-level keys sorted, nested objects in wire order, literal non-ASCII.
    A form that cannot be produced (a lone surrogate has no UTF-8 encoding) is skipped, never raised.
    """
    builders = (
        lambda: json.dumps(payload, sort_keys=True, separators=(",", ":")),
        lambda: json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        lambda: json.dumps({key: payload[key] for key in sorted(payload)}, separators=(",", ":"), ensure_ascii=False),
    )
    forms: list[bytes] = []
    for build in builders:
        try:
            text = build().encode("utf-8")
        except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
            continue
        if text not in forms:
            forms.append(text)
    return forms


def canonical_bytes(payload: dict[str, Any]) -> bytes:
    """The one form producers sign (§2.2 form 1)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("ascii")


def canonical_query(query: str | bytes) -> str:
    """Query pairs, blank values kept, sorted and re-encoded as form data (PROTOCOL §2.5)."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


# --- producing --------------------------------------------------------------------------------------


def sign_payload(signing_key: SigningKey, payload: dict[str, Any]) -> dict[str, Any]:
    """The §2.1 envelope ``{"payload", "from", "signature"}`` over the canonical text of ``payload``."""
    signature = signing_key.sign(canonical_bytes(payload)).signature.hex()
    return {"payload": payload, "from": address_of(signing_key.verify_key), "signature": signature}


def sign_headers(
    signing_key: SigningKey,
    *,
    method: str,
    path: str,
    query: str | bytes = "",
    body: bytes = b"",
    to: str,
    timestamp: int | None = None,
    request_id: str | None = None,
) -> dict[str, str]:
    """The five ``X-Co-*`` headers of a signed HTTP read (PROTOCOL §2.5)."""
    payload = http_signed_object(
        method=method,
        path=path,
        query=query,
        body=body,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        request_id=request_id or uuid.uuid4().hex,
        to=to,
    )
    return {
        "X-Co-From": address_of(signing_key.verify_key),
        "X-Co-Signature": signing_key.sign(canonical_bytes(payload)).signature.hex(),
        "X-Co-Timestamp": str(payload["timestamp"]),
        "X-Co-To": to,
        "X-Co-Request-Id": payload["request_id"],
    }


def sign_command(signing_key: SigningKey, command: dict[str, Any], *, to: str) -> dict[str, Any]:
    """A v2 command frame (PROTOCOL §2.6): the command with ``to``/``timestamp``/``nonce``, duplicated
    at top level and inside the signed ``payload``."""
    signed = dict(command, to=to, timestamp=int(time.time()), nonce=str(uuid.uuid4()))
    envelope = sign_payload(signing_key, signed)
    return {**signed, **envelope}


def http_signed_object(
    *, method: str, path: str, query: str | bytes, body: bytes, timestamp: int, request_id: str, to: Any
) -> dict[str, Any]:
    """The object a signed HTTP read covers, rebuilt from the real request (PROTOCOL §2.5)."""
    return {
        "method": method.upper(),
        "path": path,
        "query": canonical_query(query),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "timestamp": timestamp,
        "request_id": request_id,
        "to": to,
    }


# --- verifying --------------------------------------------------------------------------------------


def _check_timestamp(payload: dict[str, Any], window: float, now: float) -> float:
    """§2.3 rows 4-7."""
    timestamp = payload.get("timestamp")
    is_number = isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
    if timestamp is None or (is_number and timestamp == 0):
        raise Unauthorized(TIMESTAMP_REQUIRED)
    if not is_number:
        raise Unauthorized(TIMESTAMP_NOT_NUMERIC)
    try:
        value = float(timestamp)
    except OverflowError:  # an integer beyond float range is certainly outside the window
        raise Unauthorized(EXPIRED) from None
    if not math.isfinite(value):
        raise Unauthorized(TIMESTAMP_NOT_FINITE)
    if abs(now - value) > window:
        raise Unauthorized(EXPIRED)
    return value


def _decode_signature(signature: str) -> bytes:
    """128 hex digits, optional ``0x``; anything else is an invalid signature (HARDENING S1)."""
    text = signature[2:] if signature[:2] in ("0x", "0X") else signature
    if not _SIGNATURE_HEX.fullmatch(text):
        raise Unauthorized(INVALID_SIGNATURE)
    return bytes.fromhex(text)


def signature_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Strict Ed25519 verification of raw bytes: a 64-byte signature with S < L (RFC 8032 §5.1.7);
    libsodium also refuses small-order public keys and R values (tested against Wycheproof)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    if int.from_bytes(signature[32:], "little") >= _GROUP_ORDER:
        return False  # malleated S
    try:
        VerifyKey(public_key).verify(message, signature)
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def _verify_bytes(sender: str, signature: bytes, payload: dict[str, Any]) -> None:
    """Row 9: the signature must verify under the sender's key over one of the canonical forms."""
    public_key = bytes.fromhex(sender[2:])
    if not any(signature_valid(public_key, form, signature) for form in canonical_forms(payload)):
        raise Unauthorized(INVALID_SIGNATURE)


def _verify_signed(
    payload: dict[str, Any],
    sender: Any,
    signature: Any,
    *,
    our_address: str,
    require_to: bool,
    window: float,
    now: float | None,
) -> Verified:
    """§2.3 rows 2-9, in order."""
    if not sender:
        raise Unauthorized(FROM_REQUIRED)
    if not signature:
        raise Unauthorized(SIGNATURE_REQUIRED)
    timestamp = _check_timestamp(payload, window, time.time() if now is None else now)
    # Exact comparison with our lowercase address: an uppercase copy is refused too (HARDENING S8).
    if ("to" in payload or require_to) and payload.get("to") != our_address.lower():
        raise Unauthorized(WRONG_RECIPIENT)
    if not is_address(sender) or not isinstance(signature, str):
        raise Unauthorized(INVALID_SIGNATURE)
    raw = _decode_signature(signature)
    _verify_bytes(sender, raw, payload)
    return Verified(signer=sender.lower(), payload=payload, signature=raw, timestamp=timestamp)


def is_signed(body: Mapping[str, Any] | None) -> bool:
    """A body that carries any of ``payload``/``from``/``signature`` is treated as signed."""
    return isinstance(body, Mapping) and any(key in body for key in ("payload", "from", "signature"))


def verify_envelope(
    body: Mapping[str, Any],
    *,
    our_address: str,
    require_to: bool,
    window: float = SIGNATURE_WINDOW,
    now: float | None = None,
) -> Verified:
    """Verify a §2.1 envelope (PROTOCOL §2.3 rows 2-9). Raises ``Unauthorized`` with the exact text.

    ``require_to``: handshakes, ``POST /input``, v2 commands and SEAL must name us in ``payload.to``.
    A body with ``payload`` but no ``signature`` (or the reverse) is "signed request required".
    """
    if "payload" not in body or "signature" not in body or not isinstance(body["payload"], dict):
        raise Unauthorized(SIGNED_REQUEST_REQUIRED)
    return _verify_signed(
        body["payload"],
        body.get("from"),
        body.get("signature"),
        our_address=our_address,
        require_to=require_to,
        window=window,
        now=now,
    )


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(key).lower(): value for key, value in headers.items()}


def header_signer(headers: Mapping[str, str], *, legacy_ok: bool = False) -> str | None:
    """The claimed signer of a header-signed read, or None when the request carries no signing headers."""
    lowered = _lower_headers(headers)
    names = SIGNING_HEADERS + (LEGACY_HEADERS if legacy_ok else ())
    if not any(name in lowered for name in names):
        return None
    return lowered.get(HEADER_FROM) or (lowered.get("x-from") if legacy_ok else None) or ""


def verify_headers(
    *,
    method: str,
    path: str,
    query_string: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    our_address: str,
    window: float = SIGNATURE_WINDOW,
    now: float | None = None,
    legacy_ok: bool = False,
) -> Verified:
    """Verify a signed HTTP read (PROTOCOL §2.5), rebuilding the signed object from the real request.

    ``legacy_ok`` (only ``/admin/logs`` and ``/admin/sessions``) also accepts the two older shapes.
    Raises ``Unauthorized``: malformed signature headers, request id required, then §2.3 rows 2-9.
    """
    lowered = _lower_headers(headers)
    current = HEADER_TO in lowered or HEADER_REQUEST_ID in lowered or not legacy_ok
    if current or HEADER_FROM in lowered:
        sender, signature = lowered.get(HEADER_FROM), lowered.get(HEADER_SIGNATURE)
        raw_timestamp = lowered.get(HEADER_TIMESTAMP)
    else:
        sender, signature = lowered.get("x-from"), lowered.get("x-signature")
        raw_timestamp = lowered.get("x-timestamp")

    if current:
        timestamp: int | float | None = None
        if raw_timestamp is not None:
            if not _DECIMAL.fullmatch(raw_timestamp.strip()):
                raise Unauthorized(MALFORMED_HEADERS)
            timestamp = int(raw_timestamp)
        request_id = lowered.get(HEADER_REQUEST_ID)
        if not request_id:
            raise Unauthorized(REQUEST_ID_REQUIRED)
        payload = http_signed_object(
            method=method,
            path=path,
            query=query_string,
            body=body,
            timestamp=timestamp,  # type: ignore[arg-type]
            request_id=request_id,
            to=lowered.get(HEADER_TO),
        )
        return _verify_signed(
            payload, sender, signature, our_address=our_address, require_to=True, window=window, now=now
        )

    legacy = _legacy_signed_object(lowered, method, path, raw_timestamp)
    return _verify_signed(legacy, sender, signature, our_address=our_address, require_to=False, window=window, now=now)


def _legacy_signed_object(
    lowered: Mapping[str, str], method: str, path: str, raw_timestamp: str | None
) -> dict[str, Any]:
    """What the two older header shapes signed (``legacy_ok`` routes only)."""
    if HEADER_FROM in lowered:  # legacy (a): {"method", "path", "timestamp"}
        if raw_timestamp is not None and not _DECIMAL.fullmatch(raw_timestamp.strip()):
            raise Unauthorized(MALFORMED_HEADERS)
        return {
            "method": method.upper(),
            "path": path,
            "timestamp": int(raw_timestamp) if raw_timestamp is not None else None,
        }
    try:  # legacy (b): {"timestamp": <float of the header>}
        return {"timestamp": float(raw_timestamp) if raw_timestamp is not None else None}
    except ValueError:
        raise Unauthorized(MALFORMED_HEADERS) from None


def verify_command(
    frame: Mapping[str, Any],
    *,
    owner: str,
    our_address: str,
    window: float = SIGNATURE_WINDOW,
    now: float | None = None,
) -> Verified:
    """Verify a v2 signed command (PROTOCOL §2.6): rows 2-9 with ``to`` required, then ownership,
    type and nonce. The caller acts on ``Verified.payload`` only and claims the ledger itself."""
    payload = frame.get("payload")
    if not isinstance(payload, dict):
        raise Unauthorized(COMMAND_REQUIRED)
    verified = _verify_signed(
        payload,
        frame.get("from"),
        frame.get("signature"),
        our_address=our_address,
        require_to=True,
        window=window,
        now=now,
    )
    if verified.signer != str(owner).lower():
        raise Unauthorized(COMMAND_NOT_OWNER)
    if payload.get("type") != frame.get("type"):
        raise Unauthorized(COMMAND_TYPE_MISMATCH)
    nonce = payload.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise Unauthorized(COMMAND_NONCE_REQUIRED)
    return verified
