"""Sealed sockets (PROTOCOL §4.8): one socket, direct or relayed, encrypted end to end.

The client's ``SEAL`` carries a one-time X25519 key signed by its long-term Ed25519 identity; the host
answers ``SEALED_OK`` with its own one-time key, signed by the host's identity, and both sides build one NaCl
``Box`` from the two one-time keys. Every later frame in either direction travels as
``{"type": "SEALED", "n": <counter>, "c": <base64 of the box>}``: ``n`` counts from 1 per direction and
must strictly increase; the 24-byte nonce is ``c2h`` (client to host) or ``h2c`` (host to client) followed
by ``n`` as a 21-byte big-endian integer.

``accept`` (host) and ``hello`` / ``finish`` (client) do the handshake; a ``SealLayer`` then wraps and opens
frames for one socket. Plain Python, no I/O: ``hosting.conversation.protocol.Conversation`` and ``hosting.client`` own
the sockets. Byte for byte what the released client (``connectonion/network/sealed.py``) speaks.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from common.errors import SealRefused, SealRejected
from trust.identity import is_address
from trust.signing import SIGNATURE_WINDOW, canonical_bytes, signature_valid

SEAL = "SEAL"
SEALED_OK = "SEALED_OK"
SEALED = "SEALED"
HANDSHAKE_TIMEOUT = 10.0  # how long the released client waits for the answer to its SEAL
CLIENT_TO_HOST = b"c2h"
HOST_TO_CLIENT = b"h2c"
SEAL_FIELDS = ("to", "from", "ephemeral", "timestamp", "signature")
SEALED_OK_FIELDS = ("to", "from", "ephemeral", "client_ephemeral", "signature")
# Frames a relay itself sends a client in the clear (it holds no key): its keep-alive and "Agent not
# connected". On a sealed relayed socket they are the only frames that may arrive unsealed (§4.8).
RELAY_CONTROL = ("PING", "ERROR")

_NONCE_BYTES = 24
_MAC_BYTES = 16
_OUTER_BYTES = 64  # '{"type":"SEALED","n":<counter>,"c":""}' plus relay tags fit well inside this


def sealed_size(plain: int) -> int:
    """The largest SEALED frame that carries a plaintext of ``plain`` bytes: base64 of the box (4/3 of the
    plaintext plus its 16-byte tag) and the frame around it. Frame caps for sealed sockets use this."""
    return 4 * -(-(plain + _MAC_BYTES) // 3) + _OUTER_BYTES


def nonce(tag: bytes, counter: int) -> bytes:
    return tag + counter.to_bytes(_NONCE_BYTES - len(tag), "big")


def _signature_bytes(value: Any) -> bytes | None:
    """128 hex digits, optional ``0x`` (PROTOCOL §1.3), else ``None``."""
    if not isinstance(value, str):
        return None
    text = value[2:] if value[:2] in ("0x", "0X") else value
    if len(text) != 128:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _key_bytes(value: Any) -> bytes | None:
    """A one-time X25519 public key: exactly 64 hex digits."""
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _signed_by(address: str, payload: dict[str, Any], signature: Any) -> bool:
    raw = _signature_bytes(signature)
    return raw is not None and signature_valid(bytes.fromhex(address[2:]), canonical_bytes(payload), raw)


# --- the host's side -----------------------------------------------------------------------------------


def accept(
    frame: dict[str, Any], identity: Any, *, now: float | None = None, window: float = SIGNATURE_WINDOW
) -> tuple[dict[str, Any], SealLayer, str]:
    """Check a client's SEAL (PROTOCOL §4.8) and answer it.

    Returns ``(SEALED_OK frame, the host's layer, the sealing address in lowercase)``; raises
    ``SealRefused`` naming what is wrong. ``identity`` holds the host's ``address`` and ``signing_key``.
    """
    for name in SEAL_FIELDS:
        if name not in frame:
            raise SealRefused(f"SEAL is missing {name}")
    if frame["to"] != identity.address:
        raise SealRefused("SEAL is addressed to another host")
    sender = frame["from"]
    if not is_address(sender):
        raise SealRefused("SEAL 'from' is not an address")
    timestamp = frame["timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not math.isfinite(timestamp):
        raise SealRefused("SEAL timestamp is not a number")
    if abs((time.time() if now is None else now) - timestamp) > window:
        raise SealRefused("SEAL is stale")
    client_key = _key_bytes(frame["ephemeral"])
    if client_key is None:
        raise SealRefused("SEAL ephemeral is not a 32-byte key")
    payload = {k: frame[k] for k in ("type", "to", "from", "ephemeral", "timestamp")}
    if not _signed_by(sender, payload, frame["signature"]):
        raise SealRefused("SEAL signature does not verify")

    ours = PrivateKey.generate()
    reply = {
        "type": SEALED_OK,
        "to": sender,
        "from": identity.address,
        "ephemeral": bytes(ours.public_key).hex(),
        "client_ephemeral": frame["ephemeral"],
    }
    reply["signature"] = identity.signing_key.sign(canonical_bytes(reply)).signature.hex()
    layer = SealLayer(Box(ours, PublicKey(client_key)), send_tag=HOST_TO_CLIENT, recv_tag=CLIENT_TO_HOST)
    return reply, layer, sender.lower()


# --- the client's side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """A SEAL ready to send and the one-time key that must answer its SEALED_OK."""

    frame: dict[str, Any]
    key: PrivateKey


def hello(identity: Any, host_address: str, *, now: float | None = None) -> Hello:
    """The client's SEAL to ``host_address``, signed by ``identity`` (``address`` and ``signing_key``)."""
    key = PrivateKey.generate()
    frame: dict[str, Any] = {
        "type": SEAL,
        "to": host_address,
        "from": identity.address,
        "ephemeral": bytes(key.public_key).hex(),
        "timestamp": int(time.time() if now is None else now),
    }
    frame["signature"] = identity.signing_key.sign(canonical_bytes(frame)).signature.hex()
    return Hello(frame, key)


def finish(reply: dict[str, Any], sent: Hello) -> SealLayer:
    """Check the host's SEALED_OK against the SEAL it answers; the client's layer, or ``SealRefused``."""
    if reply.get("type") != SEALED_OK:
        raise SealRefused(f"expected {SEALED_OK}, got {str(reply.get('type'))[:40]!r}")
    for name in SEALED_OK_FIELDS:
        if name not in reply:
            raise SealRefused(f"{SEALED_OK} is missing {name}")
    if reply["from"] != sent.frame["to"] or not is_address(reply["from"]):
        raise SealRefused(f"{SEALED_OK} is not from the host that was dialed")
    if reply["to"] != sent.frame["from"]:
        raise SealRefused(f"{SEALED_OK} is addressed to someone else")
    if reply["client_ephemeral"] != sent.frame["ephemeral"]:
        raise SealRefused(f"{SEALED_OK} answers a different SEAL")  # one captured from another socket
    host_key = _key_bytes(reply["ephemeral"])
    if host_key is None:
        raise SealRefused(f"{SEALED_OK} ephemeral is not a 32-byte key")
    payload = {k: reply[k] for k in ("type", "to", "from", "ephemeral", "client_ephemeral")}
    if not _signed_by(reply["from"], payload, reply["signature"]):
        raise SealRefused(f"{SEALED_OK} signature does not verify")
    return SealLayer(Box(sent.key, PublicKey(host_key)), send_tag=CLIENT_TO_HOST, recv_tag=HOST_TO_CLIENT)


# --- one sealed socket ---------------------------------------------------------------------------------


class SealLayer:
    """The box and the two counters of one sealed socket.

    ``wrap`` numbers and encrypts an outgoing frame; ``open`` checks an incoming frame's counter, decrypts
    it and returns the plaintext JSON text (the caller parses it as it parses any frame). Not thread-safe:
    a socket's frames are opened in order and wrapped in order (the caller serialises its sends).
    """

    def __init__(self, box: Box, *, send_tag: bytes, recv_tag: bytes) -> None:
        self._box = box
        self._send_tag = send_tag
        self._recv_tag = recv_tag
        self.sent = 0
        self.received = 0

    def wrap_text(self, text: str) -> dict[str, Any]:
        self.sent += 1
        cipher = self._box.encrypt(text.encode("utf-8"), nonce(self._send_tag, self.sent)).ciphertext
        return {"type": SEALED, "n": self.sent, "c": base64.b64encode(cipher).decode("ascii")}

    def wrap(self, frame: dict[str, Any]) -> dict[str, Any]:
        return self.wrap_text(json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=str))

    def open(self, frame: dict[str, Any]) -> str:
        if frame.get("type") != SEALED:
            raise SealRejected(f"expected a {SEALED} frame, got {str(frame.get('type'))[:40]!r}")
        counter = frame.get("n")
        if isinstance(counter, bool) or not isinstance(counter, int) or counter <= self.received:
            raise SealRejected("sealed frame out of order")  # replayed, reordered or not a counter
        if counter >= 1 << (8 * (_NONCE_BYTES - len(self._recv_tag))):
            raise SealRejected("sealed frame out of order")
        cipher = frame.get("c")
        try:
            if not isinstance(cipher, str):
                raise ValueError("no ciphertext")
            clear = self._box.decrypt(base64.b64decode(cipher, validate=True), nonce(self._recv_tag, counter))
            text = clear.decode("utf-8")
        except (CryptoError, ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
            raise SealRejected("sealed frame does not open") from None
        self.received = counter
        return text
