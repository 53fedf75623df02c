"""Envelope verification: PROTOCOL §2.2-2.3 rows 2-9 and HARDENING S1-S8, S14."""

from __future__ import annotations

import json

import pytest
from nacl.signing import SigningKey

from trust.identity import address_of
from trust.signing import canonical_forms, sign_payload, verify_envelope

from .conftest import HOST_SEED, NOW, envelope, raises_exactly

OURS = address_of(SigningKey(HOST_SEED).verify_key)
L = 2**252 + 27742317777372353535851937790883648493


def verify(body, *, require_to=True, now=NOW, window=300):
    return verify_envelope(body, our_address=OURS, require_to=require_to, window=window, now=now)


def check(body, message, **kwargs):
    raises_exactly(lambda: verify(body, **kwargs), 401, message)


def resign(key: SigningKey, payload: dict) -> dict:
    return sign_payload(key, payload)


# --- success ----------------------------------------------------------------------------------------


def test_valid_envelope_verifies_and_reports_signer_payload_signature_timestamp(signer):
    body = envelope(signer, OURS, prompt="hi")
    verified = verify(body)
    assert verified.signer == address_of(signer.verify_key)
    assert verified.payload == body["payload"]
    assert verified.signature == bytes.fromhex(body["signature"])
    assert verified.timestamp == NOW


def test_signature_with_0x_prefix_and_uppercase_hex_is_accepted(signer):
    body = envelope(signer, OURS)
    assert verify({**body, "signature": "0x" + body["signature"]}).signer
    assert verify({**body, "signature": body["signature"].upper()}).signer


def test_uppercase_from_is_accepted_and_reported_lowercase(signer):
    body = envelope(signer, OURS)
    upper = "0x" + body["from"][2:].upper()
    assert verify({**body, "from": upper}).signer == body["from"]


def test_to_is_optional_where_the_spec_allows_it(signer):
    body = envelope(signer, None)
    assert verify(body, require_to=False).signer == address_of(signer.verify_key)


def test_fields_next_to_payload_are_not_covered(signer):
    body = envelope(signer, OURS, prompt="signed")
    assert verify({**body, "prompt": "tampered top level"}).payload["prompt"] == "signed"


# --- the §2.3 table, one row each -------------------------------------------------------------------


def test_payload_without_signature_is_signed_request_required(signer):
    body = envelope(signer, OURS)
    del body["signature"]
    check(body, "unauthorized: signed request required")


def test_signature_without_payload_is_signed_request_required(signer):
    body = envelope(signer, OURS)
    del body["payload"]
    check(body, "unauthorized: signed request required")


def test_payload_that_is_not_an_object_is_signed_request_required(signer):
    check({**envelope(signer, OURS), "payload": "x"}, "unauthorized: signed request required")


@pytest.mark.parametrize("sender", ["MISSING", None, ""])
def test_row2_from_missing(signer, sender):
    body = envelope(signer, OURS)
    if sender == "MISSING":
        del body["from"]
    else:
        body["from"] = sender
    check(body, "unauthorized: 'from' field required")


@pytest.mark.parametrize("signature", [None, ""])
def test_row3_signature_missing(signer, signature):
    check({**envelope(signer, OURS), "signature": signature}, "unauthorized: signature required")


@pytest.mark.parametrize("timestamp", ["MISSING", None, 0, 0.0])
def test_row4_timestamp_missing_or_zero(signer, timestamp):
    payload = {"to": OURS}
    if timestamp != "MISSING":
        payload["timestamp"] = timestamp
    check(resign(signer, payload), "unauthorized: timestamp required in payload")


@pytest.mark.parametrize("timestamp", ["1702234567", True, False, [1], {"t": 1}])
def test_row5_timestamp_not_a_number(signer, timestamp):
    check(resign(signer, {"to": OURS, "timestamp": timestamp}), "unauthorized: timestamp must be numeric")


@pytest.mark.parametrize("timestamp", [float("nan"), float("inf"), float("-inf")])
def test_row6_timestamp_not_finite(signer, timestamp):
    check(resign(signer, {"to": OURS, "timestamp": timestamp}), "unauthorized: timestamp must be finite")


@pytest.mark.parametrize("offset", [-301, 301, -10_000])
def test_row7_outside_the_window_either_direction(signer, offset):
    check(envelope(signer, OURS, timestamp=NOW + offset), "unauthorized: signature expired")


@pytest.mark.parametrize("timestamp", [1e300, -1, 10**400])
def test_row7_absurd_timestamps_are_expired(signer, timestamp):
    check(resign(signer, {"to": OURS, "timestamp": timestamp}), "unauthorized: signature expired")


@pytest.mark.parametrize("offset", [-300, 300, 0.5])
def test_window_boundary_is_inclusive(signer, offset):
    assert verify(envelope(signer, OURS, timestamp=NOW + offset)).timestamp == NOW + offset


def test_configurable_window(signer):
    body = envelope(signer, OURS, timestamp=NOW - 100)
    check(body, "unauthorized: signature expired", window=60)


@pytest.mark.parametrize("to", ["0x" + "cd" * 32, "0x" + OURS[2:].upper(), OURS + " ", "", None, 5, [OURS]])
def test_row8_to_present_and_not_us(signer, to):
    check(resign(signer, {"timestamp": NOW, "to": to}), "unauthorized: wrong recipient", require_to=False)


def test_row8b_to_absent_where_required(signer):
    check(envelope(signer, None), "unauthorized: wrong recipient")


def test_row9_tampered_payload(signer):
    body = envelope(signer, OURS, prompt="a")
    body["payload"]["prompt"] = "b"
    check(body, "unauthorized: invalid signature")


# --- S1, S2, S5: malformed signatures and addresses --------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    ["zz" * 64, "a" * 127, "a" * 130, "0x" + "a" * 126, "ab" * 63 + " a", "0x", "ab cd" * 26, 12345, ["ab"]],
)
def test_s1_bad_signature_text_is_invalid_signature(signer, signature):
    check({**envelope(signer, OURS), "signature": signature}, "unauthorized: invalid signature")


@pytest.mark.parametrize(
    "sender",
    ["ab" * 32, "0x" + "ab" * 31 + "a", "0x" + "ab" * 32 + "a", "0x" + "zz" * 32, "bob", 7, ["0x"]],
)
def test_s2_bad_from_is_invalid_signature(signer, sender):
    check({**envelope(signer, OURS), "from": sender}, "unauthorized: invalid signature")


def test_s5_valid_signature_under_another_key(signer, other_signer):
    body = envelope(signer, OURS)
    check({**body, "from": address_of(other_signer.verify_key)}, "unauthorized: invalid signature")


# --- S3, S4: small-order keys and malleated S --------------------------------------------------------


@pytest.mark.parametrize(
    "public_key",
    [
        "01" + "00" * 31,
        "00" * 32,
        "ec" + "ff" * 30 + "7f",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    ],
)
@pytest.mark.parametrize("signature", ["00" * 64, "01" + "00" * 63, "01" + "00" * 31 + "00" * 32])
def test_s3_small_order_keys_with_trivial_signatures_are_refused(public_key, signature):
    body = {"payload": {"timestamp": NOW, "to": OURS}, "from": "0x" + public_key, "signature": signature}
    check(body, "unauthorized: invalid signature")


def test_s4_signature_with_s_plus_l_is_refused(signer):
    body = envelope(signer, OURS)
    raw = bytes.fromhex(body["signature"])
    s = int.from_bytes(raw[32:], "little")
    malleated = raw[:32] + (s + L).to_bytes(32, "little")
    assert verify(body)  # the original is fine
    check({**body, "signature": malleated.hex()}, "unauthorized: invalid signature")


# --- canonical forms (§2.2) and S14 ------------------------------------------------------------------


def test_canonical_forms_sorted_at_every_depth_without_whitespace():
    forms = canonical_forms({"b": {"y": 1, "x": [2, {"d": 1, "c": 2}]}, "a": 1.5})
    assert forms[0] == b'{"a":1.5,"b":{"x":[2,{"c":2,"d":1}],"y":1}}'


def test_canonical_forms_of_ascii_payload_in_sorted_order_collapse_to_one():
    assert canonical_forms({"a": 1, "b": "x"}) == [b'{"a":1,"b":"x"}']


def test_legacy_form_keeps_nested_wire_order():
    forms = canonical_forms({"b": {"y": 1, "x": 2}, "a": "é"})
    assert forms == [
        b'{"a":"\\u00e9","b":{"x":2,"y":1}}',
        '{"a":"é","b":{"x":2,"y":1}}'.encode(),
        '{"a":"é","b":{"y":1,"x":2}}'.encode(),
    ]


def test_numbers_round_trip_in_canonical_text():
    assert canonical_forms({"t": 1702234567.123, "i": 10**20})[0] == b'{"i":100000000000000000000,"t":1702234567.123}'


def sign_text(key: SigningKey, payload: dict, text: str) -> dict:
    return {
        "payload": payload,
        "from": address_of(key.verify_key),
        "signature": key.sign(text.encode()).signature.hex(),
    }


def test_s14_non_ascii_signed_escaped_verifies(signer):
    payload = {"prompt": "你好 — ünïcode 🎉", "timestamp": NOW, "to": OURS}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert verify(sign_text(signer, payload, text)).payload["prompt"] == payload["prompt"]


def test_s14_non_ascii_signed_literal_verifies(signer):
    payload = {"prompt": "你好 — ünïcode 🎉", "timestamp": NOW, "to": OURS}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert verify(sign_text(signer, payload, text)).signer


def test_legacy_nested_order_signature_verifies(signer):
    payload = {"to": OURS, "timestamp": NOW, "session": {"z": 1, "a": "ü"}}
    legacy = json.dumps({k: payload[k] for k in sorted(payload)}, separators=(",", ":"), ensure_ascii=False)
    assert verify(sign_text(signer, payload, legacy)).signer


def test_signature_over_whitespace_form_is_refused(signer):
    payload = {"timestamp": NOW, "to": OURS}
    check(sign_text(signer, payload, json.dumps(payload, sort_keys=True)), "unauthorized: invalid signature")


def test_s14_lone_surrogate_never_raises_anything_but_unauthorized(signer):
    payload = {"prompt": "\ud800", "timestamp": NOW, "to": OURS}
    forms = canonical_forms(payload)
    assert forms == [json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()]
    assert verify(sign_payload(signer, payload)).payload["prompt"] == "\ud800"
    check({**sign_payload(signer, payload), "signature": "00" * 64}, "unauthorized: invalid signature")


def test_canonical_forms_skip_what_cannot_be_serialised():
    assert canonical_forms({"x": object()}) == []
