"""Key files under .co/keys (PROTOCOL §1.2, HARDENING F1-F3)."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from common.errors import ConfigError
from trust.identity import (
    AgentIdentity,
    IdentityError,
    address_of,
    derive_from_mnemonic,
    install_key,
    is_address,
    load_identity,
    normalize_address,
)


def write_key(co_dir: Path, data: bytes, mode: int = 0o600) -> Path:
    path = co_dir / "keys" / "agent.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "project" / ".co", tmp_path / "machine"


def test_first_start_generates_key_recovery_and_warning_with_tight_modes(dirs):
    co_dir, machine = dirs
    identity = load_identity(co_dir, machine_dir=machine)
    key = co_dir / "keys" / "agent.key"
    assert identity.created and identity.key_path == key
    assert len(key.read_bytes()) == 32
    assert mode_of(key) == 0o600
    assert mode_of(co_dir / "keys") == 0o700
    assert mode_of(co_dir / "keys" / "recovery.txt") == 0o600
    assert (co_dir / "keys" / "DO_NOT_SHARE").is_file()
    assert not (machine / "keys").exists()
    assert identity.address == address_of(SigningKey(key.read_bytes()).verify_key)


def test_generated_recovery_words_derive_the_generated_key(dirs):
    co_dir, machine = dirs
    identity = load_identity(co_dir, machine_dir=machine)
    words = (co_dir / "keys" / "recovery.txt").read_text(encoding="utf-8").strip()
    assert len(words.split()) == 12 and "\n" not in words
    assert bytes(derive_from_mnemonic(words)) == (co_dir / "keys" / "agent.key").read_bytes()
    assert address_of(derive_from_mnemonic(words).verify_key) == identity.address


def test_second_start_loads_the_same_identity(dirs):
    co_dir, machine = dirs
    first = load_identity(co_dir, machine_dir=machine)
    second = load_identity(co_dir, machine_dir=machine)
    assert second.address == first.address and not second.created


def test_project_key_wins_over_machine_key(dirs):
    co_dir, machine = dirs
    write_key(co_dir, bytes([1]) * 32)
    write_key(machine, bytes([2]) * 32)
    assert load_identity(co_dir, machine_dir=machine).address == address_of(SigningKey(bytes([1]) * 32).verify_key)


def test_machine_key_is_used_when_the_project_has_none(dirs):
    co_dir, machine = dirs
    path = write_key(machine, bytes([2]) * 32)
    identity = load_identity(co_dir, machine_dir=machine)
    assert identity.key_path == path and not identity.created
    assert not (co_dir / "keys" / "agent.key").exists()


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_length_key_refuses_and_is_never_replaced(dirs, size):
    co_dir, machine = dirs
    path = write_key(co_dir, b"k" * size)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(IdentityError) as info:
        load_identity(co_dir, machine_dir=machine)
    assert str(path) in str(info.value) and "32 bytes" in str(info.value)
    assert isinstance(info.value, ConfigError)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_unreadable_key_refuses_naming_the_path(dirs):
    co_dir, machine = dirs
    path = co_dir / "keys" / "agent.key"
    path.mkdir(parents=True)  # a directory where the key should be: unreadable as a file, even for root
    with pytest.raises(IdentityError) as info:
        load_identity(co_dir, machine_dir=machine)
    assert str(path) in str(info.value)
    assert path.is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files; the directory case covers unreadable keys")
def test_mode_000_key_refuses(dirs):
    co_dir, machine = dirs
    write_key(co_dir, bytes(32), mode=0)
    with pytest.raises(IdentityError):
        load_identity(co_dir, machine_dir=machine)


def test_a_dangling_symlink_is_a_present_but_unreadable_key(dirs):
    co_dir, machine = dirs
    (co_dir / "keys").mkdir(parents=True)
    (co_dir / "keys" / "agent.key").symlink_to(co_dir / "nowhere")
    with pytest.raises(IdentityError):
        load_identity(co_dir, machine_dir=machine)
    assert not (co_dir / "nowhere").exists()


def test_loose_key_mode_is_a_warning(dirs, caplog):
    co_dir, machine = dirs
    write_key(co_dir, bytes([3]) * 32, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="connectonion.trust"):
        identity = load_identity(co_dir, machine_dir=machine)
    assert len(identity.warnings) == 1 and "0644" in identity.warnings[0]
    assert "0644" in caplog.text
    assert bytes(identity.signing_key) == bytes([3]) * 32  # the key itself is never printed
    assert bytes([3]).hex() * 32 not in caplog.text


def test_create_false_without_any_key_is_an_error(dirs):
    co_dir, machine = dirs
    with pytest.raises(IdentityError):
        load_identity(co_dir, machine_dir=machine, create=False)
    assert not co_dir.exists()


def test_sign_hex_is_128_lowercase_hex_without_prefix():
    identity = AgentIdentity.from_signing_key(SigningKey(bytes(32)))
    signature = identity.sign_hex(b"hello")
    assert len(signature) == 128 and signature == signature.lower() and not signature.startswith("0x")
    SigningKey(bytes(32)).verify_key.verify(b"hello", bytes.fromhex(signature))


def test_identity_repr_does_not_show_the_key():
    identity = AgentIdentity.from_signing_key(SigningKey(bytes([5]) * 32))
    assert (bytes([5]) * 32).hex() not in repr(identity)
    assert "signing_key" not in repr(identity)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0x" + "ab" * 32, True),
        ("0x" + "AB" * 32, True),
        ("ab" * 33, False),
        ("0x" + "ab" * 31 + "a", False),
        ("0x" + "ab" * 32 + "a", False),
        ("0x" + "zz" * 32, False),
        ("0X" + "ab" * 32, False),
        (None, False),
        (5, False),
        ("0x" + "ab" * 32 + "\n", False),
    ],
)
def test_is_address(value, expected):
    assert is_address(value) is expected


def test_normalize_address_lowercases_and_rejects_junk():
    assert normalize_address("0x" + "AB" * 32) == "0x" + "ab" * 32
    with pytest.raises(ValueError):
        normalize_address("bob")


def test_invalid_phrase_is_refused():
    with pytest.raises(ValueError):
        derive_from_mnemonic("abandon " * 12)
    with pytest.raises(ValueError):
        derive_from_mnemonic("")


def test_install_key_refuses_to_overwrite_without_force(tmp_path):
    co_dir = tmp_path / ".co"
    path = write_key(co_dir, bytes([1]) * 32)
    with pytest.raises(IdentityError):
        install_key(co_dir, SigningKey(bytes([2]) * 32))
    assert path.read_bytes() == bytes([1]) * 32


def test_install_key_with_force_backs_up_the_old_key(tmp_path):
    co_dir = tmp_path / ".co"
    write_key(co_dir, bytes([1]) * 32)
    identity, backups = install_key(co_dir, SigningKey(bytes([2]) * 32), force=True)
    assert (co_dir / "keys" / "agent.key").read_bytes() == bytes([2]) * 32
    assert [b.read_bytes() for b in backups] == [bytes([1]) * 32]
    assert backups[0].name.startswith("agent.key.bak-")
    assert identity.address == address_of(SigningKey(bytes([2]) * 32).verify_key)
