"""Helpers for end-to-end trust tests: client keys, signed bodies, and a local fake model server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey

from tests.fake_openai import openai_server
from trust.identity import address_of


def address(key: SigningKey) -> str:
    return address_of(key.verify_key)


def host_address(host: Any) -> str:
    return httpx.get(host.url + "/info", timeout=5).json()["address"]


def post_input(host: Any, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(host.url + "/input", json=body, timeout=30, **kw)


def wait_for_output(host: Any, text: str, deadline: float = 10.0) -> str:
    return host.wait_for_output(text, deadline)


@dataclass
class FakeLLM:
    """A loopback OpenAI-compatible chat endpoint whose answer the test sets."""

    decision: str = "ACCEPT"
    reason: str = "fine"
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def texts(self) -> str:
        return json.dumps(self.requests)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    llm = FakeLLM()

    def answer(body: dict[str, Any], auth: str | None, path: str) -> tuple[int, str]:
        llm.requests.append(body)
        return 200, json.dumps({"decision": llm.decision, "reason": llm.reason})

    with openai_server(answer) as url:
        llm.url = url
        yield llm


def llm_env(llm: FakeLLM | None, url: str | None = None, **extra: str) -> dict[str, str]:
    # A generous judge timeout: the first connectonion import in a loaded host can take seconds.
    env = {"OPENAI_BASE_URL": url or (llm.url if llm else ""), "OPENAI_API_KEY": "sk-local",
           "CONNECTONION_TRUST_MODEL": "judge-model", "CONNECTONION_TRUST_TIMEOUT": "30"}
    env.update(extra)
    return env
