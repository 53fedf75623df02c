"""Signed HTTP reads (PROTOCOL §2.5, HARDENING S12) and signed v2 commands (§2.6, W17), verifier level."""

from __future__ import annotations

import hashlib
import json

import pytest
from nacl.signing import SigningKey

from trust.identity import address_of
from trust.signing import (
    canonical_query,
    sign_command,
    sign_headers,
    sign_payload,
    verify_command,
    verify_headers,
)

from .conftest import HOST_SEED, NOW, raises_exactly

OURS = address_of(SigningKey(HOST_SEED).verify_key)
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def headers_for(key, *, method="GET", path="/sessions", query="", body=b"", to=OURS, timestamp=int(NOW), rid="r1"):
    return sign_headers(
        key, method=method, path=path, query=query, body=body, to=to, timestamp=timestamp, request_id=rid
    )


def read(headers, *, method="GET", path="/sessions", query="", body=b"", legacy_ok=False, now=NOW):
    return verify_headers(
        method=method,
        path=path,
        query_string=query,
        body=body,
        headers=headers,
        our_address=OURS,
        window=300,
        now=now,
        legacy_ok=legacy_ok,
    )


def test_signed_read_verifies_and_rebuilds_the_object_from_the_request(signer):
    verified = read(headers_for(signer, path="/sessions/abc"), path="/sessions/abc")
    assert verified.signer == address_of(signer.verify_key)
    assert verified.payload == {
        "method": "GET",
        "path": "/sessions/abc",
        "query": "",
        "body_sha256": EMPTY_SHA,
        "timestamp": int(NOW),
        "request_id": "r1",
        "to": OURS,
    }


def test_header_names_are_case_insensitive(signer):
    lowered = {k.lower(): v for k, v in headers_for(signer).items()}
    upper = {k.upper(): v for k, v in headers_for(signer).items()}
    assert read(lowered).signer == read(upper).signer


def test_s12_signature_for_one_path_does_not_open_another(signer):
    raises_exactly(
        lambda: read(headers_for(signer, path="/sessions"), path="/sessions/x"),
        401,
        "unauthorized: invalid signature",
    )


def test_method_is_bound(signer):
    raises_exactly(
        lambda: read(headers_for(signer, method="GET"), method="POST"), 401, "unauthorized: invalid signature"
    )


def test_body_hash_mismatch_is_invalid_signature(signer):
    headers = headers_for(signer, method="POST", body=b'{"a":1}')
    assert (
        read(headers, method="POST", body=b'{"a":1}').payload["body_sha256"] == hashlib.sha256(b'{"a":1}').hexdigest()
    )
    raises_exactly(lambda: read(headers, method="POST", body=b'{"a":2}'), 401, "unauthorized: invalid signature")


def test_query_is_canonicalised_sorted_with_blank_values(signer):
    headers = headers_for(signer, query="b=2&a=&a=1")
    assert read(headers, query="a=1&b=2&a=").payload["query"] == "a=&a=1&b=2"
    assert canonical_query(b"z=%20y&x") == "x=&z=+y"
    raises_exactly(lambda: read(headers, query="a=1&b=3&a="), 401, "unauthorized: invalid signature")


@pytest.mark.parametrize("timestamp", ["12.5", "abc", "", "1e9", "0x10", "1_702_234_567"])
def test_s12_non_integer_timestamp_is_malformed(signer, timestamp):
    headers = {**headers_for(signer), "X-Co-Timestamp": timestamp}
    raises_exactly(lambda: read(headers), 401, "unauthorized: malformed signature headers")


def test_s12_missing_request_id(signer):
    headers = headers_for(signer)
    del headers["X-Co-Request-Id"]
    raises_exactly(lambda: read(headers), 401, "unauthorized: request id required")


def test_missing_to_header_is_wrong_recipient(signer):
    headers = headers_for(signer)
    del headers["X-Co-To"]
    raises_exactly(lambda: read(headers), 401, "unauthorized: wrong recipient")


def test_another_recipient_is_wrong_recipient(signer):
    raises_exactly(lambda: read(headers_for(signer, to="0x" + "cd" * 32)), 401, "unauthorized: wrong recipient")


def test_headers_timestamp_window(signer):
    raises_exactly(lambda: read(headers_for(signer), now=NOW + 301), 401, "unauthorized: signature expired")


@pytest.mark.parametrize(
    "missing, message",
    [
        ("X-Co-From", "unauthorized: 'from' field required"),
        ("X-Co-Signature", "unauthorized: signature required"),
        ("X-Co-Timestamp", "unauthorized: timestamp required in payload"),
    ],
)
def test_missing_signing_headers(signer, missing, message):
    headers = headers_for(signer)
    del headers[missing]
    raises_exactly(lambda: read(headers), 401, message)


def test_legacy_shape_a_only_when_allowed(signer):
    payload = {"method": "GET", "path": "/admin/logs", "timestamp": int(NOW)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    headers = {
        "X-Co-From": address_of(signer.verify_key),
        "X-Co-Signature": signer.sign(text).signature.hex(),
        "X-Co-Timestamp": str(int(NOW)),
    }
    assert read(headers, path="/admin/logs", legacy_ok=True).payload == payload
    raises_exactly(lambda: read(headers, path="/admin/logs"), 401, "unauthorized: request id required")
    raises_exactly(
        lambda: read(headers, path="/admin/sessions", legacy_ok=True), 401, "unauthorized: invalid signature"
    )


def test_legacy_shape_b_only_when_allowed(signer):
    text = json.dumps({"timestamp": NOW + 0.25}, sort_keys=True, separators=(",", ":")).encode()
    headers = {
        "X-From": address_of(signer.verify_key),
        "X-Signature": signer.sign(text).signature.hex(),
        "X-Timestamp": str(NOW + 0.25),
    }
    assert read(headers, path="/admin/logs", legacy_ok=True).timestamp == NOW + 0.25
    raises_exactly(lambda: read(headers, path="/admin/logs"), 401, "unauthorized: request id required")


# --- v2 commands ------------------------------------------------------------------------------------


def command(key, **overrides):
    frame = sign_command(key, {"type": "INPUT", "input_id": "i1", "prompt": "Hello"}, to=OURS)
    frame["payload"]["timestamp"] = NOW
    frame["timestamp"] = NOW
    signed = sign_payload(key, frame["payload"])
    frame.update(signed)
    frame.update(overrides)
    return frame


def run(frame, owner):
    return verify_command(frame, owner=owner, our_address=OURS, window=300, now=NOW)


def test_signed_command_verifies_and_returns_its_payload(signer):
    frame = command(signer, prompt="top-level copy is ignored")
    verified = run(frame, address_of(signer.verify_key))
    assert verified.payload["prompt"] == "Hello" and verified.payload["nonce"]


def test_command_shape_matches_the_released_client(signer):
    frame = sign_command(signer, {"type": "INPUT", "input_id": "i1", "prompt": "Hi"}, to=OURS)
    assert {k: frame[k] for k in frame["payload"]} == frame["payload"]
    assert set(frame) == set(frame["payload"]) | {"payload", "from", "signature"}


def test_command_owner_is_case_insensitive(signer):
    assert run(command(signer), address_of(signer.verify_key).upper().replace("0X", "0x"))


def test_command_from_another_signer(signer, other_signer):
    raises_exactly(
        lambda: run(command(other_signer), address_of(signer.verify_key)),
        401,
        "unauthorized: command signer does not own this connection",
    )


def test_command_type_mismatch(signer):
    raises_exactly(
        lambda: run(command(signer, type="INTERRUPT"), address_of(signer.verify_key)),
        401,
        "unauthorized: signed command type mismatch",
    )


@pytest.mark.parametrize("nonce", ["MISSING", "", 5, None])
def test_command_nonce_required(signer, nonce):
    frame = command(signer)
    payload = dict(frame["payload"])
    if nonce == "MISSING":
        del payload["nonce"]
    else:
        payload["nonce"] = nonce
    frame.update(sign_payload(signer, payload))
    raises_exactly(
        lambda: run(frame, address_of(signer.verify_key)), 401, "unauthorized: signed command nonce required"
    )


@pytest.mark.parametrize("payload", ["MISSING", "text", None, [1]])
def test_unsigned_command_is_signed_command_required(signer, payload):
    frame = {"type": "INPUT", "prompt": "x", "from": address_of(signer.verify_key), "signature": "00" * 64}
    if payload != "MISSING":
        frame["payload"] = payload
    raises_exactly(lambda: run(frame, address_of(signer.verify_key)), 401, "unauthorized: signed command required")


def test_command_without_to_is_wrong_recipient(signer):
    frame = command(signer)
    payload = {k: v for k, v in frame["payload"].items() if k != "to"}
    frame.update(sign_payload(signer, payload))
    raises_exactly(lambda: run(frame, address_of(signer.verify_key)), 401, "unauthorized: wrong recipient")


def test_command_with_relay_altered_prompt_fails(signer):
    frame = command(signer)
    frame["payload"]["prompt"] = "rm -rf /"
    raises_exactly(lambda: run(frame, address_of(signer.verify_key)), 401, "unauthorized: invalid signature")
