"""POST /input against a real host process: shapes, multi-turn, factories, instances, errors."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.conftest import HostProcess


def post(host: HostProcess, body, *, timeout: float = 30, **kw) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(host.url + "/input", json=body, timeout=timeout, **kw)
    return httpx.post(
        host.url + "/input", content=body, timeout=timeout, headers={"content-type": "application/json"}, **kw
    )


def test_input_response_shape_and_tool_trace(demo):
    r = post(demo, {"prompt": "calculate (2+3)*7"})
    assert r.status_code == 200
    body = r.json()
    assert str(uuid.UUID(body["session_id"])) == body["session_id"]
    assert body["status"] == "done"
    assert "35" in body["result"]
    assert isinstance(body["duration_ms"], int) and not isinstance(body["duration_ms"], bool)
    session = body["session"]
    assert session["session_id"] == body["session_id"]
    assert session["turn"] == 1
    assert isinstance(session["messages"], list) and session["messages"]
    tools = [e for e in session["trace"] if e.get("type") == "tool_result"]
    assert [t["name"] for t in tools] == ["calculate"]
    assert tools[0]["args"] == {"expression": "(2+3)*7"}


def test_multi_turn_by_passing_the_session_back(demo):
    first = post(demo, {"prompt": "my name is Ada"}).json()
    second = post(demo, {"prompt": "what is my name", "session": first["session"]}).json()
    assert second["status"] == "done"
    assert second["session_id"] == first["session_id"]
    assert second["session"]["turn"] == 2
    assert "Ada" in second["result"]
    # a fresh conversation does not know it
    third = post(demo, {"prompt": "what is my name"}).json()
    assert "Ada" not in third["result"]
    assert third["session_id"] != first["session_id"]


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"{not json", "Invalid JSON"),
        (b"[1, 2]", None),
        (b"{}", "prompt"),
        (json.dumps({"prompt": 5}).encode(), "prompt"),
        (json.dumps({"prompt": None}).encode(), "prompt"),
        (json.dumps({"prompt": "hi", "session": "abc"}).encode(), "session"),
        (json.dumps({"prompt": "hi", "session": [1]}).encode(), "session"),
        (json.dumps({"prompt": "hi", "session": {"messages": "nope"}}).encode(), "messages"),
        (json.dumps({"prompt": "hi", "images": "x"}).encode(), "images"),
    ],
)
def test_bad_input_is_400_naming_the_problem(demo, body, needle):
    r = post(demo, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and error
    if needle == "Invalid JSON":
        assert r.json() == {"error": "Invalid JSON"}
    elif needle:
        assert needle in error.lower() or needle in error


def test_errors_leave_the_host_serving(demo):
    post(demo, b"{broken")
    assert post(demo, {"prompt": "calculate 1+1"}).json()["status"] == "done"


def test_factory_called_once_per_request(module_hosts, tmp_path):
    counter = tmp_path / "count"
    counter.write_text("")
    host = module_hosts("tests.agents:echo_factory", env={"CO_TEST_FACTORY_COUNT": str(counter)}, name="echo")
    before = len(counter.read_text())
    n = 7
    for i in range(n):
        r = post(host, {"prompt": f"hello {i}"})
        assert r.json()["result"] == f"echo: hello {i}"
    assert len(counter.read_text()) - before == n


def test_echo_agent_multi_turn_is_recorded_by_the_host(module_hosts):
    host = module_hosts("tests.agents:echo_factory", name="echo2")
    first = post(host, {"prompt": "one"}).json()
    second = post(host, {"prompt": "two", "session": first["session"]}).json()
    assert second["session"]["turn"] == 2 and second["session_id"] == first["session_id"]
    contents = [m["content"] for m in second["session"]["messages"]]
    assert contents == ["one", "echo: one", "two", "echo: two"]


def test_plain_function_factory(module_hosts):
    host = module_hosts("tests.agents:function_factory", name="fn")
    r = post(host, {"prompt": "shout"})
    assert r.status_code == 200
    assert r.json()["result"] == "SHOUT"


INSTANCE_AGENT = """
class Counter:
    name = "counter"

    def __init__(self):
        self.n = 0

    def input(self, prompt):
        self.n += 1
        return str(self.n)


agent = Counter()
"""


def test_agent_instance_is_shared_and_banner_says_so(module_hosts):
    host = module_hosts("instagent:agent", name="inst", files={"instagent.py": INSTANCE_AGENT})
    results = [int(post(host, {"prompt": "x"}).json()["result"]) for _ in range(3)]
    assert results == [results[0], results[0] + 1, results[0] + 2]  # one instance, state shared
    assert "shared instance" in host.output()


def test_agent_exception_is_500_record_failed_and_host_keeps_serving(module_hosts):
    host = module_hosts("tests.agents:failing_factory", name="failing")
    r = post(host, {"prompt": "boom"})
    assert r.status_code == 500
    assert r.json()["error"] == "Unable to run agent"
    assert "secret internal detail" not in r.text
    listing = httpx.get(host.url + "/sessions").json()["sessions"]
    assert listing and listing[0]["status"] == "failed"
    record = httpx.get(f"{host.url}/sessions/{listing[0]['session_id']}").json()
    assert record["status"] == "failed"
    lines = [json.loads(x) for x in (host.project / ".co/session_results.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines if x["session_id"] == listing[0]["session_id"]] == ["running", "failed"]
    assert httpx.get(host.url + "/health").json()["status"] == "healthy"
    assert post(host, {"prompt": "again"}).status_code == 500


def test_factory_raising_per_request_is_500(module_hosts):
    host = module_hosts("tests.co_agents:flaky_factory", name="flaky")
    r = post(host, {"prompt": "x"})
    assert r.status_code == 500
    assert r.json()["error"] == "Unable to run agent"
    assert httpx.get(host.url + "/sessions").json()["sessions"][0]["status"] == "failed"
    assert httpx.get(host.url + "/health").status_code == 200


def test_factory_raising_at_start_stops_the_host(project):
    host = HostProcess(project, "tests.agents:raising_factory")
    with pytest.raises(RuntimeError, match="factory broke"):
        host.start()


def test_odd_results_are_coerced_to_strings(module_hosts):
    host = module_hosts("tests.agents:odd_factory", name="odd")
    got = {p: post(host, {"prompt": p}).json()["result"] for p in ("dict", "none", "bytes")}
    assert json.loads(got["dict"]) == {"dict": [1, 2]}
    assert got["none"] == ""
    assert got["bytes"] == "bytes"
    assert all(isinstance(v, str) for v in got.values())


def test_oversize_body_is_413(module_hosts):
    host = module_hosts(name="small", files={".co/host.yaml": "max_file_size: 1\nmax_files_per_request: 1\n"})
    info = httpx.get(host.url + "/info").json()
    assert info["accepted_inputs"]["files"] == {"max_file_size_mb": 1, "max_files_per_request": 1}
    big = b'{"prompt": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    r = post(host, big)
    assert r.status_code == 413
    assert "error" in r.json()
    assert post(host, {"prompt": "calculate 2*2"}).status_code == 200
