"""``manage.py agentkey``: show, create and import the host identity without ever printing the key."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from nacl.signing import SigningKey

from trust.identity import address_of, derive_from_mnemonic

ABANDON = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
ABANDON_ADDRESS = "0x54ff7e165926bca30e8b1535f22c053a0e0e2ca6d5a445a149bde23d90c6ee1e"


def agentkey(tmp_path: Path, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "agentkey",
        "--co-dir",
        str(tmp_path / ".co"),
        "--machine-dir",
        str(tmp_path / "machine"),
        *args,
        stdout=out,
        stderr=err,
    )
    return out.getvalue(), err.getvalue()


def key_file(tmp_path: Path) -> Path:
    return tmp_path / ".co" / "keys" / "agent.key"


def test_without_a_key_it_says_how_to_create_one(tmp_path):
    with pytest.raises(CommandError, match="--create"):
        agentkey(tmp_path)
    assert not key_file(tmp_path).exists()


def test_create_makes_a_key_once_and_prints_address_and_path(tmp_path):
    out, _ = agentkey(tmp_path, "--create")
    key = key_file(tmp_path).read_bytes()
    address = address_of(SigningKey(key).verify_key)
    assert f"address: {address}" in out and f"key: {key_file(tmp_path)}" in out
    assert key.hex() not in out
    again, _ = agentkey(tmp_path, "--create")
    assert key_file(tmp_path).read_bytes() == key and "created" not in again
    assert f"address: {address}" in agentkey(tmp_path)[0]


def test_import_phrase_installs_the_released_derivation_with_recovery_words(tmp_path):
    out, _ = agentkey(tmp_path, "--import-phrase", ABANDON.upper())
    assert f"address: {ABANDON_ADDRESS}" in out
    assert (tmp_path / ".co" / "keys" / "recovery.txt").read_text().strip() == ABANDON
    assert key_file(tmp_path).read_bytes() == bytes(derive_from_mnemonic(ABANDON))


def test_import_key_file(tmp_path):
    seed = tmp_path / "seed.bin"
    seed.write_bytes(bytes([4]) * 32)
    out, _ = agentkey(tmp_path, "--import-key", str(seed))
    assert f"address: {address_of(SigningKey(bytes([4]) * 32).verify_key)}" in out
    assert not (tmp_path / ".co" / "keys" / "recovery.txt").exists()


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_import_key_of_the_wrong_size_is_refused(tmp_path, size):
    seed = tmp_path / "seed.bin"
    seed.write_bytes(b"x" * size)
    with pytest.raises(CommandError, match="32 raw bytes"):
        agentkey(tmp_path, "--import-key", str(seed))
    assert not key_file(tmp_path).exists()


def test_import_bad_phrase_is_refused(tmp_path):
    with pytest.raises(CommandError, match="recovery phrase"):
        agentkey(tmp_path, "--import-phrase", "not twelve real words")


def test_import_never_replaces_an_existing_key_without_force(tmp_path):
    agentkey(tmp_path, "--create")
    before = key_file(tmp_path).read_bytes()
    with pytest.raises(CommandError, match="--force"):
        agentkey(tmp_path, "--import-phrase", ABANDON)
    assert key_file(tmp_path).read_bytes() == before


def test_import_with_force_backs_up_key_and_recovery(tmp_path):
    agentkey(tmp_path, "--create")
    before = key_file(tmp_path).read_bytes()
    out, _ = agentkey(tmp_path, "--import-phrase", ABANDON, "--force")
    keys = tmp_path / ".co" / "keys"
    backups = sorted(p.name for p in keys.iterdir() if ".bak-" in p.name)
    assert [name.split(".bak-")[0] for name in backups] == ["agent.key", "recovery.txt"]
    assert (keys / backups[0]).read_bytes() == before
    assert f"address: {ABANDON_ADDRESS}" in out and "backup:" in out


def test_corrupt_key_is_reported_not_replaced(tmp_path):
    key_file(tmp_path).parent.mkdir(parents=True)
    key_file(tmp_path).write_bytes(b"short")
    with pytest.raises(CommandError, match="32 bytes"):
        agentkey(tmp_path, "--create")
    assert key_file(tmp_path).read_bytes() == b"short"


def test_loose_mode_is_warned_on_stderr(tmp_path):
    agentkey(tmp_path, "--create")
    key_file(tmp_path).chmod(0o644)
    _, err = agentkey(tmp_path)
    assert "0644" in err
