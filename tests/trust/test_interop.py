"""Interop with the released connectonion 1.9.2 signing code: theirs verifies under ours and the reverse."""

from __future__ import annotations

import json
import time

import pytest
from nacl.signing import SigningKey

from trust.identity import address_of, derive_from_mnemonic
from trust.signing import (
    sign_command,
    sign_headers,
    sign_payload,
    verify_command,
    verify_envelope,
    verify_headers,
)

from .conftest import HOST_SEED

co_address = pytest.importorskip("connectonion.address")
co_auth = pytest.importorskip("connectonion.network.host.auth")

OURS = address_of(SigningKey(HOST_SEED).verify_key)


@pytest.fixture
def their_keys():
    return co_address.generate()


def test_released_generate_and_our_derivation_agree_on_the_phrase(their_keys):
    ours = derive_from_mnemonic(their_keys["seed_phrase"])
    assert address_of(ours.verify_key) == their_keys["address"]
    assert bytes(ours) == bytes(their_keys["signing_key"])


def test_released_recover_matches_our_derivation():
    words = "legal winner thank year wave sausage worth useful legal winner thank yellow"
    assert co_address.recover(words)["address"] == address_of(derive_from_mnemonic(words).verify_key)


def test_released_client_connect_payload_verifies_under_ours(their_keys):
    # What connect.py's _build_connect_message signs: {to, timestamp, signed_commands: 1}.
    payload = {"to": OURS, "timestamp": int(time.time()), "signed_commands": 1}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    frame = {
        "type": "CONNECT",
        "payload": payload,
        "from": their_keys["address"],
        "signature": co_address.sign(their_keys, canonical.encode()).hex(),
    }
    assert verify_envelope(frame, our_address=OURS, require_to=True).signer == their_keys["address"]


def test_released_non_ascii_prompt_verifies_under_ours(their_keys):
    payload = {"prompt": "你好, ça va?", "to": OURS, "timestamp": time.time()}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    body = {
        "payload": payload,
        "from": their_keys["address"],
        "signature": co_address.sign(their_keys, canonical.encode()).hex(),
    }
    assert verify_envelope(body, our_address=OURS, require_to=True).payload["prompt"] == "你好, ça va?"


def test_our_envelope_verifies_under_the_released_verifier(signer):
    body = sign_payload(signer, {"prompt": "你好", "to": OURS, "timestamp": time.time()})
    assert co_auth.verify_signature(body["payload"], body["signature"], body["from"])
    assert co_address.verify(
        body["from"],
        json.dumps(body["payload"], sort_keys=True, separators=(",", ":")).encode(),
        bytes.fromhex(body["signature"]),
    )


def test_our_envelope_passes_the_released_host_authentication(signer):
    body = sign_payload(signer, {"prompt": "hi", "to": OURS, "timestamp": time.time()})
    prompt, who, error = co_auth._authenticate_signed(body, recipient_address=OURS)
    assert (prompt, who, error) == ("hi", address_of(signer.verify_key), None)


def test_released_signed_http_request_verifies_under_ours(their_keys):
    headers = co_auth.sign_http_request(
        their_keys, "GET", "/sessions/abc", recipient_address=OURS, query="b=2&a=1", body=b""
    )
    verified = verify_headers(
        method="GET",
        path="/sessions/abc",
        query_string="a=1&b=2",
        body=b"",
        headers=headers,
        our_address=OURS,
    )
    assert verified.signer == their_keys["address"]


def test_our_signed_headers_pass_the_released_host(signer):
    headers = sign_headers(signer, method="GET", path="/sessions", query="x=1", body=b"", to=OURS)
    identity, status, error = co_auth.authenticate_http_request(
        headers,
        "GET",
        "/sessions",
        query="x=1",
        body=b"",
        recipient_address=OURS,
        replay_check=lambda data: False,
    )
    assert (identity, status, error) == (address_of(signer.verify_key), 200, None)


def test_released_legacy_get_headers_verify_on_admin_routes(their_keys):
    headers = co_auth.sign_request(their_keys, "GET", "/admin/logs")
    verified = verify_headers(
        method="GET",
        path="/admin/logs",
        query_string="",
        body=b"",
        headers=headers,
        our_address=OURS,
        legacy_ok=True,
    )
    assert verified.payload["path"] == "/admin/logs"


def test_released_admin_body_is_route_bound(their_keys):
    body = co_auth.sign_request_body(their_keys, "POST", "/admin/trust/promote", {"client_id": "0x" + "ab" * 32})
    verified = verify_envelope(body, our_address=OURS, require_to=False)
    assert (verified.payload["method"], verified.payload["path"]) == ("POST", "/admin/trust/promote")


def test_our_v2_command_passes_the_released_command_check(signer):
    frame = sign_command(signer, {"type": "INPUT", "input_id": "1", "prompt": "hi"}, to=OURS)
    payload, error = co_auth.authenticated_command_payload(
        frame, address_of(signer.verify_key), OURS, replay_check=lambda data: False
    )
    assert error is None and payload["prompt"] == "hi"


def test_released_client_command_frame_verifies_under_ours(their_keys):
    from connectonion.network.connect import RemoteAgent

    agent = RemoteAgent.__new__(RemoteAgent)
    agent.address = OURS
    agent._keys = their_keys
    frame = agent._build_command_message({"type": "INPUT", "input_id": "7", "prompt": "hello"}, is_direct=True)
    verified = verify_command(frame, owner=their_keys["address"], our_address=OURS)
    assert verified.payload["prompt"] == "hello"
