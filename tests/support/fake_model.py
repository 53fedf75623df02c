"""A loopback OpenAI-compatible chat-completions server standing in for a trust policy's model (no network).

One copy for every test that needs a model: the trust unit tests call the judges against it, the end-to-end
trust tests point a real host at it through ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeModel:
    """What the server answers (``reply`` after ``delay`` with ``status``) and what it was asked: each request
    as ``{"path", "body", "auth"}``. ``url`` is the base URL (``http://127.0.0.1:<port>/v1``) once served."""

    reply: str = '{"decision": "ACCEPT", "reason": "looks fine"}'
    delay: float = 0.0
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def decide(self, decision: str, reason: str) -> None:
        """Answer every later request with this verdict, as a policy model would."""
        self.reply = json.dumps({"decision": decision, "reason": reason})

    @property
    def calls(self) -> int:
        return len(self.requests)

    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests]

    def texts(self) -> str:
        """Every request body as one JSON text, to search for what the host sent."""
        return json.dumps(self.bodies())

    def answer(self, body: dict[str, Any], auth: str | None, path: str) -> tuple[int, str]:
        self.requests.append({"path": path, "body": body, "auth": auth})
        if self.delay:
            time.sleep(self.delay)
        return self.status, self.reply


def completion(body: dict[str, Any], content: str) -> bytes:
    """An OpenAI chat-completion response carrying ``content``."""
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


@contextmanager
def serve_model(model: FakeModel | None = None) -> Iterator[FakeModel]:
    """Serve ``POST …/chat/completions`` from ``model`` (a fresh one when None) on a loopback port."""
    model = model or FakeModel()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            status, content = model.answer(body, self.headers.get("Authorization"), self.path)
            data = completion(body, content)
            self.send_response(status)
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
