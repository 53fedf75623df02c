"""``log_format: json``: the host's console log is JSON lines, and a line written while a turn runs carries the
turn's session id and (tracing on) trace id, the same ones as its session record."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import free_port

pytestmark = [pytest.mark.slow]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_log_lines_carry_the_session_and_trace_ids(start_host, project):
    (project / ".co").mkdir()
    (project / ".co" / "host.yaml").write_text(
        f"log_format: json\ntracing: true\notlp_endpoint: http://127.0.0.1:{free_port()}\n"
    )
    host = start_host("tests.agents:failing_factory")
    reply = httpx.post(host.url + "/input", json={"prompt": "boom"}, timeout=30)
    assert reply.status_code == 500
    listing = httpx.get(host.url + "/sessions").json()["sessions"]
    record = httpx.get(f"{host.url}/sessions/{listing[0]['session_id']}").json()
    assert len(record["trace_id"]) == 32
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = json_lines(host.output())
        failed = [x for x in lines if x["message"].startswith("agent raised in session")]
        if failed:
            break
        time.sleep(0.1)
    assert failed, host.output()
    line = failed[0]
    assert line["level"] == "error" and line["logger"] == "connectonion.turns"
    assert line["session_id"] == record["session_id"] and line["trace_id"] == record["trace_id"]
    assert len(line["span_id"]) == 16 and "RuntimeError" in line["exception"]
    # the turn's first line (its prompt, written before the agent thread takes the turn) joins the same way
    started = [x for x in lines if x["message"].startswith("[") and f"input {record['session_id'][:8]}" in x["message"]]
    assert started, lines
    assert started[0]["session_id"] == record["session_id"] and started[0]["trace_id"] == record["trace_id"]
    assert all({"ts", "level", "logger", "message"} <= set(x) for x in lines)
    assert any(x["logger"] == "connectonion.trust" or "trust decision" in x["message"] for x in lines)
