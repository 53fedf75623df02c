"""ANNOUNCE building and checking, relay URL forms and announced endpoints (PROTOCOL §8.1, Appendix A)."""

from __future__ import annotations

import json

import pytest
from nacl.signing import SigningKey

from hosting.core.config import HostConfig
from hosting.relay import wire
from trust.identity import AgentIdentity

VECTOR_KEY = AgentIdentity.from_signing_key(SigningKey(bytes(range(32))))
VECTOR_SIGNATURE = (
    "2da0101cd5771e63bc31808c9b81cdad94513f4d10c00479f5ecec1e26d2e29e"
    "4067141499f29230b099d68bd709606763fd1a07bbffe7597c092fc727b20706"
)
NOW = 1702234567


def announce(**overrides):
    fields = {
        "endpoints": [],
        "summary": "s",
        "profile": None,
        "relay_base": "wss://oo.openonion.ai",
        "now": NOW,
    }
    fields.update(overrides)
    return wire.build_announce(VECTOR_KEY, **fields)


def test_announce_matches_the_appendix_a_vector():
    message = announce()
    assert message["address"] == "0x03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    unsigned = {k: v for k, v in message.items() if k != "signature"}
    assert wire.announce_text(unsigned).decode() == (
        '{"address": "0x03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8", "endpoints": [], '
        '"relay": "wss://oo.openonion.ai", "relay_features": ["conn_id"], "summary": "s", '
        '"timestamp": 1702234567, "type": "ANNOUNCE"}'
    )
    assert message["signature"] == VECTOR_SIGNATURE


def test_profile_signature_covers_the_compact_canonical_profile():
    profile = {"alias": "translator", "tools": ["translate"], "model": "m", "skills": []}
    message = announce(profile=profile)
    expected = VECTOR_KEY.signing_key.sign(json.dumps(profile, sort_keys=True, separators=(",", ":")).encode())
    assert message["profile_signature"] == expected.signature.hex()
    assert wire.verify_announce(message, NOW, 300)["profile"] == profile


def test_relay_accepts_the_default_separator_and_the_compact_signature():
    message = announce()
    assert wire.verify_announce(message, NOW + 299, 300)["address"] == VECTOR_KEY.address
    compact = {k: v for k, v in message.items() if k != "signature"}
    compact["signature"] = VECTOR_KEY.sign_hex(wire.compact_text(compact))
    assert wire.verify_announce(compact, NOW, 300)["summary"] == "s"
    message["signature"] = "0x" + message["signature"].upper()
    assert wire.verify_announce(message, NOW, 300)


@pytest.mark.parametrize(
    "tamper, error",
    [
        (lambda m: m.update(summary="other"), wire.INVALID_SIGNATURE),
        (lambda m: m.update(address="0x" + "ab" * 32), wire.INVALID_SIGNATURE),
        (lambda m: m.update(address="0x1234"), wire.INVALID_SIGNATURE),
        (lambda m: m.update(signature="zz"), wire.INVALID_SIGNATURE),
        (lambda m: m.pop("signature"), wire.INVALID_SIGNATURE),
        (lambda m: m.update(timestamp=True), wire.INVALID_ANNOUNCE),
        (lambda m: m.update(endpoints="http://x"), wire.INVALID_ANNOUNCE),
        (lambda m: m.update(type="HELLO"), wire.INVALID_ANNOUNCE),
    ],
)
def test_a_tampered_announce_is_refused(tamper, error):
    message = announce()
    tamper(message)
    with pytest.raises(wire.AnnounceRejected) as caught:
        wire.verify_announce(message, NOW, 300)
    assert caught.value.error == error


def test_a_tampered_profile_is_refused():
    message = announce(profile={"alias": "a"})
    message["profile"]["alias"] = "b"
    with pytest.raises(wire.AnnounceRejected, match="Invalid signature"):
        wire.verify_announce(message, NOW, 300)


def test_an_announce_301_seconds_old_or_ahead_is_refused():
    for skew in (301, -301):
        with pytest.raises(wire.AnnounceRejected) as caught:
            wire.verify_announce(announce(), NOW + skew, 300)
        assert "expired" in caught.value.error


def test_a_summary_over_1000_characters_is_refused_by_the_relay_and_cut_by_the_agent():
    message = announce(summary="x" * 1001)
    assert len(message["summary"]) == 1000  # build_announce cuts
    unsigned = {k: v for k, v in message.items() if k != "signature"}
    unsigned["summary"] = "x" * 1001
    unsigned["signature"] = VECTOR_KEY.sign_hex(wire.announce_text(unsigned))
    with pytest.raises(wire.AnnounceRejected) as caught:
        wire.verify_announce(unsigned, NOW, 300)
    assert caught.value.error == "Summary too long (max 1000 chars)"
    assert wire.fit_summary(None, name="translator") == "translator agent"


@pytest.mark.parametrize(
    "configured, base",
    [
        ("wss://r", "wss://r"),
        ("wss://r/", "wss://r"),
        ("wss://r/ws/announce", "wss://r"),
        ("wss://r/ws/announce/", "wss://r"),
        ("https://r", "wss://r"),
        ("ws://127.0.0.1:8765/ws/announce", "ws://127.0.0.1:8765"),
        (None, None),
        ("", None),
    ],
)
def test_relay_url_may_be_a_base_or_the_announce_url(configured, base):
    assert wire.relay_base(configured) == base
    if base:
        assert wire.announce_url(base) == base + "/ws/announce"


def test_the_default_relay_is_the_public_one():
    assert wire.default_relay_base() == "wss://oo.openonion.ai"
    assert wire.http_base("wss://oo.openonion.ai") == "https://oo.openonion.ai"
    assert wire.http_base("ws://127.0.0.1:1") == "http://127.0.0.1:1"


def test_endpoints_with_a_public_domain_are_exactly_https_and_wss():
    config = HostConfig(public_domain="a.b", bind="0.0.0.0")
    assert wire.endpoints_for(config, addresses=["192.168.1.20"]) == ["https://a.b", "wss://a.b/ws"]


def test_endpoints_list_localhost_and_each_interface_when_bound_to_all():
    config = HostConfig(port=8123, bind="0.0.0.0")
    assert wire.endpoints_for(config, addresses=["192.168.1.20", "127.0.1.1"]) == [
        "http://localhost:8123",
        "ws://localhost:8123/ws",
        "http://192.168.1.20:8123",
        "ws://192.168.1.20:8123/ws",
    ]


def test_endpoints_never_name_an_address_the_server_does_not_listen_on():
    loopback = HostConfig(port=8000, bind="127.0.0.1")
    assert wire.endpoints_for(loopback, addresses=["192.168.1.20"]) == [
        "http://localhost:8000",
        "ws://localhost:8000/ws",
    ]
    one_lan = HostConfig(port=8000, bind="10.0.0.5")
    assert wire.endpoints_for(one_lan, addresses=["192.168.1.20"]) == [
        "http://10.0.0.5:8000",
        "ws://10.0.0.5:8000/ws",
    ]
    no_loopback = HostConfig(port=8000, bind="127.0.0.1", announce_loopback=False)
    assert wire.endpoints_for(no_loopback, addresses=[]) == []


def test_every_signature_check_goes_through_trust_signing():
    """Issue 15.7: one Ed25519 verifier (strict S < L, small-order keys refused) for every path; no
    module but ``trust/signing.py`` calls PyNaCl's verify itself."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    callers = sorted(
        str(path.relative_to(repo))
        for folder in ("hosting", "trust", "sessions_app", "connectonion_site")
        for path in (repo / folder).rglob("*.py")
        if "VerifyKey(" in path.read_text()
    )
    assert callers == ["trust/signing.py"]


def test_a_malleated_announce_signature_is_refused():
    """S + L verifies nowhere (trust/signing.py refuses it before libsodium is asked)."""
    message = wire.build_announce(
        VECTOR_KEY, endpoints=[], summary="s", profile=None, relay_base="wss://oo.openonion.ai", now=NOW
    )
    raw = bytes.fromhex(message["signature"])
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(raw[32:], "little") + order
    message["signature"] = (raw[:32] + s.to_bytes(32, "little")).hex()
    with pytest.raises(wire.AnnounceRejected, match="Invalid signature"):
        wire.verify_announce(message, NOW, 300)
