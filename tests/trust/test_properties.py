"""Property tests: every signed payload round-trips, every single-byte change is refused (HARDENING §6)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from common.errors import Unauthorized
from trust.identity import address_of
from trust.signing import canonical_bytes, sign_payload, verify_envelope

from .conftest import HOST_SEED, NOW

OURS = address_of(SigningKey(HOST_SEED).verify_key)
KEY = SigningKey(bytes([21]) * 32)
CI = settings(max_examples=200, deadline=None, derandomize=True)

text = st.text(alphabet=st.characters(codec=None), max_size=20)  # includes lone surrogates
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)


def signed_body(data) -> dict:
    return sign_payload(KEY, {"to": OURS, "timestamp": NOW, "data": data})


def verify(body):
    return verify_envelope(body, our_address=OURS, require_to=True, now=NOW)


@CI
@given(json_values)
def test_sign_then_verify_round_trips_through_the_wire(data):
    body = signed_body(data)
    wire = json.loads(json.dumps(body))
    verified = verify(wire)
    assert verified.signer == address_of(KEY.verify_key)
    assert canonical_bytes(verified.payload) == canonical_bytes(body["payload"])


@CI
@given(json_values, st.data())
def test_any_single_byte_change_of_the_signature_is_refused(data, draw):
    body = signed_body(data)
    raw = bytearray(bytes.fromhex(body["signature"]))
    index = draw.draw(st.integers(0, 63))
    raw[index] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(Unauthorized):
        verify({**body, "signature": raw.hex()})


@CI
@given(json_values, st.data())
def test_any_single_byte_change_of_the_payload_is_refused(data, draw):
    body = signed_body(data)
    wire = bytearray(canonical_bytes(body["payload"]))
    index = draw.draw(st.integers(0, len(wire) - 1))
    wire[index] ^= draw.draw(st.integers(1, 127))  # stays ASCII, like the escaped canonical form
    try:
        tampered = json.loads(wire.decode("ascii"))
    except ValueError:
        return  # no longer JSON: the parser refuses it before any verifier sees it
    if not isinstance(tampered, dict) or canonical_bytes(tampered) == canonical_bytes(body["payload"]):
        return  # the same payload spelled differently (e.g. \u00e9 vs \u00E9) is the same request
    with pytest.raises(Unauthorized):
        verify({**body, "payload": tampered})
