"""Fixtures for the trust app: real keys, real files in tmp_path, a fixed clock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from hosting.config import HostConfig
from hosting.errors import HostError
from trust.identity import AgentIdentity
from trust.signing import sign_payload

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
    """A signed body addressed to ``to`` (omitted when None)."""
    payload = {"timestamp": timestamp, **fields}
    if to is not None:
        payload["to"] = to
    return sign_payload(key, payload)


def raises_exactly(call: Callable[[], Any], status: int, message: str) -> HostError:
    """Run ``call`` and assert it raised a HostError with exactly this status and text."""
    with pytest.raises(HostError) as info:
        call()
    assert (info.value.status, info.value.message) == (status, message)
    return info.value


@dataclass
class FakeModel:
    """A local OpenAI-compatible server: answers every chat completion with ``reply`` after ``delay``."""

    reply: str = '{"decision": "ACCEPT", "reason": "looks fine"}'
    delay: float = 0.0
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    @property
    def calls(self) -> int:
        return len(self.requests)


@pytest.fixture
def fake_model() -> Iterator[FakeModel]:
    model = FakeModel()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            model.requests.append(
                {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
            )
            if model.delay:
                time.sleep(model.delay)
            answer = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(NOW),
                "model": body.get("model", "test"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": model.reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            data = json.dumps(answer).encode()
            self.send_response(model.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    model.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield model
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
