"""Fixtures for the trust app: real keys, real files in tmp_path, a fixed clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from common.errors import HostError
from hosting.core.config import HostConfig
from tests.support.envelopes import signed
from trust.identity import AgentIdentity

# "Now" for signed test payloads: the real time at collection, so the ledgers (which expire entries by
# the wall clock) and a gate with a fixed clock agree. Whole seconds, like the released client's stamps.
NOW = float(int(time.time()))
HOST_SEED = bytes(range(32))  # Appendix A key


@pytest.fixture
def host_identity() -> AgentIdentity:
    return AgentIdentity.from_signing_key(SigningKey(HOST_SEED))


@pytest.fixture
def signer() -> SigningKey:
    return SigningKey(bytes([7]) * 32)


@pytest.fixture
def other_signer() -> SigningKey:
    return SigningKey(bytes([9]) * 32)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., HostConfig]:
    def build(**overrides: Any) -> HostConfig:
        (tmp_path / ".co").mkdir(exist_ok=True)
        return HostConfig(project_dir=tmp_path, **overrides)

    return build


def envelope(key: SigningKey, to: str | None, *, timestamp: float = NOW, **fields: Any) -> dict[str, Any]:
    """A signed body addressed to ``to`` (omitted when None), dated ``NOW`` unless told."""
    return signed(key, to, timestamp=timestamp, **fields)


def raises_exactly(call: Callable[[], Any], status: int, message: str) -> HostError:
    """Run ``call`` and assert it raised a HostError with exactly this status and text."""
    with pytest.raises(HostError) as info:
        call()
    assert (info.value.status, info.value.message) == (status, message)
    return info.value
