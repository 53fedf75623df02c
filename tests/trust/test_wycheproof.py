"""Wycheproof Ed25519 vectors (HARDENING S3/S4): our strict verifier accepts the valid ones and refuses
every invalid one (edge-case r/s, truncated, garbage-appended, bad R encodings, malleated s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trust.signing import signature_valid

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "ed25519_wycheproof_subset.json").read_text())
CASES = VECTORS["tests"]


@pytest.mark.parametrize("case", CASES, ids=[f"tc{c['tcId']}-{c['flag']}" for c in CASES])
def test_wycheproof_vector(case):
    ok = signature_valid(bytes.fromhex(case["pk"]), bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"]))
    assert ok is (case["result"] == "valid")


def test_the_subset_covers_every_category():
    flags = {case["flag"] for case in CASES}
    assert flags >= {
        "Valid",
        "InvalidSignature",
        "TruncatedSignature",
        "SignatureWithGarbage",
        "CompressedSignature",
        "InvalidEncoding",
        "SignatureMalleability",
        "Ktv",
        "InvalidKtv",
    }
