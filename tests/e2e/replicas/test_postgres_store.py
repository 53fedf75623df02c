"""Session results in PostgreSQL (issue 18): two machines read and continue each other's sessions."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.conftest import MANAGE, host_env
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def _post(host, prompt: str, sid: str | None = None, **kw) -> httpx.Response:
    body: dict = {"prompt": prompt}
    if sid:
        body["session"] = {"session_id": sid}
    return httpx.post(host.url + "/input", json=body, timeout=60, **kw)


def test_a_session_continues_on_another_machine_and_says_which_store(machines):
    one, two = machines.start(2, "tests.agents:echo_factory")
    for host in (one, two):
        health = httpx.get(host.url + "/health").json()
        assert health["store"] == "postgres" and health["replay_log"] == "sqlite", health
        assert "results: PostgreSQL (shared)" in host.output()
    first = _post(one, "hello").json()
    sid = first["session_id"]
    assert httpx.get(f"{two.url}/sessions/{sid}").json()["result"] == "echo: hello"
    second = _post(two, "again", sid).json()
    assert second["session"]["turn"] == 2, second
    assert [m["content"] for m in second["session"]["messages"] if m["role"] == "user"] == ["hello", "again"]
    listed = {s["session_id"] for s in httpx.get(one.url + "/sessions").json()["sessions"]}
    assert sid in listed
    assert not (one.project / ".co" / "session_results.jsonl").exists()  # nothing left in a machine's folder


def test_a_busy_session_is_busy_on_every_machine(machines):
    one, two = machines.start(2, "tests.agents:slow_factory")
    sid = str(uuid.uuid4())
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(one.url + "/input", json={"prompt": "sleep 6", "session": {"session_id": sid}}, timeout=0.5)
    wait_for(lambda: httpx.get(f"{two.url}/sessions/{sid}").status_code == 200, what="running record visible")
    assert httpx.get(f"{two.url}/sessions/{sid}").json()["status"] == "running"
    busy = _post(two, "sleep 0", sid)
    assert busy.status_code == 409, busy.text


def test_sigkill_a_machine_its_turn_reads_interrupted_within_the_lease(machines):
    one, two = machines.start(2, "tests.agents:slow_factory")
    sid = str(uuid.uuid4())
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(one.url + "/input", json={"prompt": "sleep 30", "session": {"session_id": sid}}, timeout=0.5)
    wait_for(lambda: httpx.get(f"{two.url}/sessions/{sid}").status_code == 200, what="running record visible")
    os.killpg(one.proc.pid, signal.SIGKILL)
    # lease_seconds: 3 (conftest), sweeps every 2 s: well within 20 s even on a loaded machine
    wait_for(
        lambda: httpx.get(f"{two.url}/sessions/{sid}").json()["status"] == "interrupted",
        timeout=20,
        what="interrupted after the lease lapsed",
    )
    again = _post(two, "sleep 0", sid)
    assert again.status_code == 200 and again.json()["status"] == "done", again.text


def test_expired_results_vanish_running_ones_stay(machines):
    (host,) = machines.start(1, "tests.agents:slow_factory", yaml="result_ttl: 1\n")
    sid = str(uuid.uuid4())
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(host.url + "/input", json={"prompt": "sleep 4", "session": {"session_id": sid}}, timeout=0.5)
    done = _post(host, "sleep 0").json()["session_id"]
    time.sleep(2)  # both records are past their expiry now
    assert httpx.get(f"{host.url}/sessions/{done}").status_code == 404
    assert httpx.get(f"{host.url}/sessions/{sid}").json()["status"] == "running"


def test_import_results_copies_a_jsonl_file(machines, tmp_path):
    now = int(time.time())
    records = [
        {"session_id": "imported-1", "status": "running", "prompt": "p", "created": now, "expires": now + 60},
        {
            "session_id": "imported-1",
            "status": "done",
            "prompt": "p",
            "result": "r",
            "created": now,
            "expires": now + 3600,
            "updated_at": now,
        },
        {"session_id": "old", "status": "done", "created": now - 100, "expires": now - 10},
    ]
    source = tmp_path / "session_results.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn": ')
    env = host_env(DATABASE_URL=machines.pg_url)
    (host,) = machines.start(1, "tests.agents:echo_factory")
    for _ in range(2):  # twice: idempotent
        out = subprocess.run(
            [sys.executable, str(MANAGE), "import_results", str(source)],
            cwd=host.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "imported 1 session(s)" in out.stdout, out.stdout
    assert httpx.get(f"{host.url}/sessions/imported-1").json()["result"] == "r"
    assert httpx.get(f"{host.url}/sessions/old").status_code == 404
