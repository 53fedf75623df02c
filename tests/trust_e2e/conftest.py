"""Helpers for end-to-end trust tests: client keys, signed bodies, and a local fake model server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey

from trust.identity import address_of
from trust.signing import sign_payload


def address(key: SigningKey) -> str:
    return address_of(key.verify_key)


def host_address(host: Any) -> str:
    return httpx.get(host.url + "/info", timeout=5).json()["address"]


def signed(key: SigningKey, to: str | None, *, timestamp: float | None = None, **fields: Any) -> dict[str, Any]:
    """A §2.1 envelope over ``fields`` plus ``to`` and ``timestamp`` (omitted ``to`` when None)."""
    payload: dict[str, Any] = dict(fields)
    payload["timestamp"] = int(time.time()) if timestamp is None else timestamp
    if to is not None:
        payload["to"] = to
    return sign_payload(key, payload)


def post_input(host: Any, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(host.url + "/input", json=body, timeout=30, **kw)


def wait_for_output(host: Any, text: str, deadline: float = 10.0) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        out = host.output()
        if text in out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in host output:\n{host.output()[-3000:]}")


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

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            size = int(self.headers.get("Content-Length") or 0)
            llm.requests.append(json.loads(self.rfile.read(size) or b"{}"))
            content = json.dumps({"decision": llm.decision, "reason": llm.reason})
            data = json.dumps({
                "id": "chatcmpl-e2e", "object": "chat.completion", "created": int(time.time()), "model": "judge",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    llm.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield llm
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def llm_env(llm: FakeLLM | None, url: str | None = None, **extra: str) -> dict[str, str]:
    # A generous judge timeout: the first connectonion import in a loaded host can take seconds.
    env = {"OPENAI_BASE_URL": url or (llm.url if llm else ""), "OPENAI_API_KEY": "sk-local",
           "CONNECTONION_TRUST_MODEL": "judge-model", "CONNECTONION_TRUST_TIMEOUT": "30"}
    env.update(extra)
    return env
