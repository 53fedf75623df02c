"""Helpers for end-to-end trust tests: client keys, signed bodies, the environment pointing a host at the
fake model (the ``fake_model`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

from typing import Any

import httpx
from nacl.signing import SigningKey

from tests.support.fake_model import FakeModel
from trust.identity import address_of


def address(key: SigningKey) -> str:
    return address_of(key.verify_key)


def host_address(host: Any) -> str:
    return httpx.get(host.url + "/info", timeout=5).json()["address"]


def post_input(host: Any, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(host.url + "/input", json=body, timeout=30, **kw)


def wait_for_output(host: Any, text: str, deadline: float = 10.0) -> str:
    return host.wait_for_output(text, deadline)


def llm_env(llm: FakeModel | None, url: str | None = None, **extra: str) -> dict[str, str]:
    # A generous judge timeout: the first connectonion import in a loaded host can take seconds.
    env = {
        "OPENAI_BASE_URL": url or (llm.url if llm else ""),
        "OPENAI_API_KEY": "sk-local",
        "CONNECTONION_TRUST_MODEL": "judge-model",
        "CONNECTONION_TRUST_TIMEOUT": "30",
    }
    env.update(extra)
    return env
