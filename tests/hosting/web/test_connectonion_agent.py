"""A real ``connectonion.Agent`` (released package, stub LLM, no network) hosted unchanged."""

from __future__ import annotations

import httpx


def test_connectonion_agent_runs_tools_and_keeps_multi_turn(module_hosts, tmp_path):
    host = module_hosts("tests.co_agents:create_co_agent", env={"CO_TEST_CO_DIR": str(tmp_path)}, name="co")
    info = httpx.get(host.url + "/info").json()
    assert info["name"] == "co-stub" and info["model"] == "stub/rules" and info["tools"] == ["add"]

    first = httpx.post(host.url + "/input", json={"prompt": "add 2 and 40"}, timeout=30)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "done" and body["result"] == "the sum is 42"
    assert body["session"]["session_id"] == body["session_id"]
    assert body["session"]["turn"] == 1
    calls = [e for e in body["session"]["trace"] if e.get("type") == "tool_result"]
    assert [c["name"] for c in calls] == ["add"] and calls[0]["args"] == {"a": 2, "b": 40}

    second = httpx.post(host.url + "/input", json={"prompt": "my name is Grace", "session": body["session"]}).json()
    third = httpx.post(host.url + "/input", json={"prompt": "what is my name", "session": second["session"]}).json()
    assert third["result"] == "your name is Grace"
    assert third["session_id"] == body["session_id"]
    assert third["session"]["turn"] == 3
    fresh = httpx.post(host.url + "/input", json={"prompt": "what is my name"}).json()
    assert fresh["result"] == "I do not know your name"
