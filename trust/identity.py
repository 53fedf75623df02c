"""The host's own Ed25519 identity: key files under ``.co/keys``, addresses, recovery phrases (PROTOCOL §1)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from common.errors import ConfigError

logger = logging.getLogger("connectonion.trust")

KEY_FILE = "agent.key"
RECOVERY_FILE = "recovery.txt"
WARNING_FILE = "DO_NOT_SHARE"
KEY_SIZE = 32

# SLIP-0013 path of the URI https://oo.openonion.ai, the released client's account key (PROTOCOL §1.2 rule 4).
ACCOUNT_PATH = (13, 2107038128, 851645955, 1509754396, 381167091)
_HARDENED = 0x80000000

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{64}")

_WARNING_TEXT = """PRIVATE KEYS - DO NOT SHARE

This folder holds the private key of this agent (agent.key) and, when present,
the twelve words that recreate it (recovery.txt).

Whoever has either of them can act as this agent on the network.
Never commit this folder, paste it into a chat, or copy it to a shared machine.
Keep an offline copy of recovery.txt somewhere safe.
"""


class IdentityError(ConfigError):
    """The key file exists but cannot be used; the message names the path. Never repaired silently."""


@dataclass(frozen=True)
class AgentIdentity:
    """A loaded identity: the signing key and the address computed from it (never read from elsewhere)."""

    signing_key: SigningKey = field(repr=False)
    address: str
    key_path: Path | None = None
    created: bool = False
    warnings: tuple[str, ...] = ()

    def sign_hex(self, data: bytes) -> str:
        """Sign ``data``; returns the 64-byte signature as 128 lowercase hex digits, no ``0x``."""
        return self.signing_key.sign(data).signature.hex()

    @classmethod
    def from_signing_key(cls, signing_key: SigningKey, **extra: object) -> AgentIdentity:
        """Wrap a key that is already in memory (tests, clients)."""
        return cls(signing_key=signing_key, address=address_of(signing_key.verify_key), **extra)  # type: ignore[arg-type]


def address_of(verify_key: VerifyKey | bytes) -> str:
    """``0x`` + the 64 lowercase hex digits of the public key (PROTOCOL §1.1)."""
    raw = bytes(verify_key)
    if len(raw) != KEY_SIZE:
        raise ValueError("a public key is 32 bytes")
    return "0x" + raw.hex()


def is_address(value: object) -> bool:
    """True for ``0x`` + exactly 64 hex digits (either case); anything else is not an address."""
    return isinstance(value, str) and _ADDRESS.fullmatch(value) is not None


def normalize_address(value: str) -> str:
    """The stored and printed form: lowercase. Raises ``ValueError`` for anything that is not an address."""
    if not is_address(value):
        raise ValueError("not an address: expected 0x followed by 64 hex digits")
    return value.lower()


# --- recovery phrases -------------------------------------------------------------------------------


def _slip10_ed25519(seed: bytes, path: tuple[int, ...]) -> bytes:
    """SLIP-0010 Ed25519 derivation (hardened steps only, as Ed25519 requires); returns the 32-byte key."""
    digest = hmac.new(b"ed25519 seed", seed, hashlib.sha512).digest()
    key, chain = digest[:32], digest[32:]
    for index in path:
        child = (index | _HARDENED).to_bytes(4, "big")
        digest = hmac.new(chain, b"\x00" + key + child, hashlib.sha512).digest()
        key, chain = digest[:32], digest[32:]
    return key


def _normalize_phrase(words: str) -> str:
    return " ".join(words.lower().split())


def derive_from_mnemonic(words: str) -> SigningKey:
    """The account key of a 12-word BIP-39 phrase under the released derivation (PROTOCOL §1.2 rule 4).

    Raises ``ValueError`` when the words are not a valid English BIP-39 phrase.
    """
    from mnemonic import Mnemonic

    phrase = _normalize_phrase(words)
    mnemo = Mnemonic("english")
    if not phrase or not mnemo.check(phrase):
        raise ValueError("not a valid BIP-39 recovery phrase")
    return SigningKey(_slip10_ed25519(Mnemonic.to_seed(phrase, passphrase=""), ACCOUNT_PATH))


def generate_mnemonic() -> str:
    """A fresh 12-word English phrase (128 bits of entropy)."""
    from mnemonic import Mnemonic

    return Mnemonic("english").generate(strength=128)


# --- key files --------------------------------------------------------------------------------------


def key_path(co_dir: Path) -> Path:
    return Path(co_dir) / "keys" / KEY_FILE


def _read_key(path: Path) -> tuple[SigningKey, tuple[str, ...]]:
    """Read an existing key file. Wrong size or unreadable -> ``IdentityError`` naming the path."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(KEY_SIZE + 1)
            mode = os.fstat(fh.fileno()).st_mode
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise IdentityError(
            f"{path}: cannot read the agent key ({reason}); fix or restore the file, it is never replaced"
        ) from None
    if len(raw) != KEY_SIZE:
        found = f"{len(raw)} bytes" if len(raw) <= KEY_SIZE else "more than 32 bytes"
        raise IdentityError(
            f"{path}: the agent key must be exactly 32 bytes (found {found}); "
            "restore the original file, it is never replaced"
        )
    warnings: tuple[str, ...] = ()
    if mode & 0o077:
        warnings = (f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}",)
        logger.warning(warnings[0])
    return SigningKey(raw), warnings


def _write_new(path: Path, data: bytes) -> bool:
    """Create ``path`` with mode 0600 only if it does not exist yet; False when it already does.

    The content goes to a temporary file first and is then hard-linked into place, so a
    concurrent reader never sees a partial key and a concurrent writer never overwrites ours.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _prepare_keys_dir(co_dir: Path) -> Path:
    keys_dir = Path(co_dir) / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    warning = keys_dir / WARNING_FILE
    if not warning.exists():
        warning.write_text(_WARNING_TEXT, encoding="utf-8")
    return keys_dir


def _save_recovery(keys_dir: Path, phrase: str) -> tuple[str, ...]:
    path = keys_dir / RECOVERY_FILE
    if _write_new(path, (phrase + "\n").encode("utf-8")):
        return ()
    message = f"{path} already exists and was kept; it may not match the new agent key"
    logger.warning(message)
    return (message,)


def _generate(co_dir: Path) -> AgentIdentity:
    keys_dir = _prepare_keys_dir(co_dir)
    path = keys_dir / KEY_FILE
    phrase = generate_mnemonic()
    signing_key = derive_from_mnemonic(phrase)
    if not _write_new(path, bytes(signing_key)):
        # Another worker created the identity between our check and our write: use theirs.
        loaded, warnings = _read_key(path)
        return AgentIdentity(loaded, address_of(loaded.verify_key), path, False, warnings)
    warnings = _save_recovery(keys_dir, phrase)
    address = address_of(signing_key.verify_key)
    logger.info("created a new agent identity %s in %s", address, path)
    return AgentIdentity(signing_key, address, path, True, warnings)


def load_identity(co_dir: Path, *, machine_dir: Path | None = None, create: bool = True) -> AgentIdentity:
    """Load the host identity (PROTOCOL §1.2 rules 1-3).

    ``co_dir`` is the project's ``.co``; ``machine_dir`` the machine folder (default ``~/.co``).
    Order: ``<co_dir>/keys/agent.key``, else ``<machine_dir>/keys/agent.key``, else a new identity is
    generated into the project (key 0600, folder 0700, ``recovery.txt``, ``DO_NOT_SHARE``).
    Raises ``IdentityError`` for a present but unusable key (never replaced), or when no key exists
    and ``create`` is false. A key readable by others is reported in ``warnings`` and logged.
    """
    project = key_path(co_dir)
    machine = key_path(Path(machine_dir) if machine_dir is not None else Path.home() / ".co")
    for path in (project, machine):
        if os.path.lexists(path):
            signing_key, warnings = _read_key(path)
            return AgentIdentity(signing_key, address_of(signing_key.verify_key), path, False, warnings)
    if not create:
        raise IdentityError(f"no agent key at {project} or {machine}; create one with: manage.py agentkey --create")
    return _generate(Path(co_dir))


def install_key(
    co_dir: Path, signing_key: SigningKey, *, phrase: str | None = None, force: bool = False
) -> tuple[AgentIdentity, list[Path]]:
    """Install ``signing_key`` as the project key; returns the identity and the backups made.

    Without ``force`` an existing key is never touched (``IdentityError``). With ``force`` the old
    ``agent.key`` and ``recovery.txt`` are renamed to ``*.bak-<UTC timestamp>`` first.
    ``phrase`` (the words the key was derived from) is saved as ``recovery.txt``.
    """
    keys_dir = _prepare_keys_dir(Path(co_dir))
    path = keys_dir / KEY_FILE
    backups: list[Path] = []
    if os.path.lexists(path):
        if not force:
            raise IdentityError(f"{path} already exists; use --force to replace it (the old key is backed up)")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for name in (KEY_FILE, RECOVERY_FILE):
            old = keys_dir / name
            if os.path.lexists(old):
                backup = keys_dir / f"{name}.bak-{stamp}"
                os.rename(old, backup)
                backups.append(backup)
    if not _write_new(path, bytes(signing_key)):
        raise IdentityError(f"{path} was created by another process meanwhile; nothing was changed")
    warnings: tuple[str, ...] = ()
    if phrase is not None:
        warnings = _save_recovery(keys_dir, _normalize_phrase(phrase))
    identity = AgentIdentity(signing_key, address_of(signing_key.verify_key), path, True, warnings)
    return identity, backups
