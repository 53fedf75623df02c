"""What the host logs for a newcomer's first requests: one trust line each, and the truth about approvals."""

from __future__ import annotations

import httpx


def test_one_trust_line_per_request_and_http_approvals_say_there_is_no_approver(demo_host):
    r = httpx.post(demo_host.url + "/input", json={"prompt": "save a note: milk"}, timeout=30)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "done", body
    assert "approvals need a WebSocket connection" in body["result"], body["result"]
    refused = [e for e in body["session"]["trace"] if e.get("type") == "tool_result" and e.get("name") == "save_note"]
    assert refused and refused[0]["error"] == "no interactive client: approvals need a WebSocket connection"
    log = demo_host.output()
    assert "rejected by the user" not in log, log
    trust_lines = [line for line in log.splitlines() if "trust" in line and "careful" in line and "INFO" in line]
    assert len(trust_lines) == 1, trust_lines
