"""PROTOCOL Appendix A and RFC 8032 known answers, computed with our own code."""

from __future__ import annotations

import json

from nacl.signing import SigningKey

from trust.identity import address_of, derive_from_mnemonic
from trust.signing import canonical_bytes, canonical_forms, sign_payload, verify_envelope

from .conftest import HOST_SEED

APPENDIX_ADDRESS = "0x03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
TO = "0x" + "ab" * 32
PROMPT_SIGNATURE = (
    "892741163ede7aee5ab45387b7b20269ea4eea6b4cdedeac375145ae44685df6"
    "69b0c3dcfa5d9537a3fd2260c9cdb9e13028e96b4f094adabf020453019bab00"
)
ANNOUNCE_SIGNATURE = (
    "2da0101cd5771e63bc31808c9b81cdad94513f4d10c00479f5ecec1e26d2e29e"
    "4067141499f29230b099d68bd709606763fd1a07bbffe7597c092fc727b20706"
)
ABANDON = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"


def test_appendix_key_gives_the_appendix_address():
    assert address_of(SigningKey(HOST_SEED).verify_key) == APPENDIX_ADDRESS


def test_appendix_prompt_payload_has_the_appendix_canonical_text_and_signature():
    payload = {"prompt": "Translate hello", "to": TO, "timestamp": 1702234567}
    assert canonical_bytes(payload) == (
        b'{"prompt":"Translate hello","timestamp":1702234567,"to":"' + TO.encode() + b'"}'
    )
    envelope = sign_payload(SigningKey(HOST_SEED), payload)
    assert envelope == {"payload": payload, "from": APPENDIX_ADDRESS, "signature": PROMPT_SIGNATURE}


def test_appendix_signature_verifies_under_our_verifier():
    payload = {"prompt": "Translate hello", "to": TO, "timestamp": 1702234567}
    body = {"payload": payload, "from": APPENDIX_ADDRESS, "signature": PROMPT_SIGNATURE}
    verified = verify_envelope(body, our_address=TO, require_to=True, now=1702234567)
    assert verified.signer == APPENDIX_ADDRESS
    assert verified.signature.hex() == PROMPT_SIGNATURE


def test_appendix_non_ascii_forms_are_escaped_then_literal():
    payload = {"prompt": "你好", "timestamp": 1702234567, "to": TO}
    forms = canonical_forms(payload)
    assert forms[0] == b'{"prompt":"\\u4f60\\u597d","timestamp":1702234567,"to":"' + TO.encode() + b'"}'
    assert forms[1] == '{"prompt":"你好","timestamp":1702234567,"to":"'.encode() + TO.encode() + b'"}'


def test_appendix_announce_signature():
    # ANNOUNCE is signed over json.dumps(sort_keys=True) with the default separators (PROTOCOL §8.1).
    message = {
        "type": "ANNOUNCE",
        "address": APPENDIX_ADDRESS,
        "timestamp": 1702234567,
        "summary": "s",
        "endpoints": [],
        "relay": "wss://oo.openonion.ai",
        "relay_features": ["conn_id"],
    }
    text = json.dumps(message, sort_keys=True)
    assert text.startswith('{"address": "0x03a1') and text.endswith('"type": "ANNOUNCE"}')
    assert SigningKey(HOST_SEED).sign(text.encode()).signature.hex() == ANNOUNCE_SIGNATURE


def test_appendix_recovery_phrase_uses_the_released_derivation():
    key = derive_from_mnemonic(ABANDON)
    assert address_of(key.verify_key) == "0x54ff7e165926bca30e8b1535f22c053a0e0e2ca6d5a445a149bde23d90c6ee1e"


def test_seed_era_derivation_is_a_different_address():
    from mnemonic import Mnemonic

    seed_era = SigningKey(Mnemonic("english").to_seed(ABANDON)[:32])
    assert address_of(seed_era.verify_key) == "0xc5785e1865b708938aff8161d573006496663b1aa10834e396dc566869a2c66a"
    assert address_of(derive_from_mnemonic(ABANDON).verify_key) != address_of(seed_era.verify_key)


def test_rfc8032_test2_seed_is_the_seed_page_banner_address():
    seed = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
    key = SigningKey(seed)
    assert address_of(key.verify_key) == "0x3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
    assert key.sign(bytes([0x72])).signature.hex() == (
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
    )
