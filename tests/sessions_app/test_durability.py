"""The JSONL file behind a real host: lines written, crashes survived, expiry and compaction at start."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.support.wait import wait_for


def lines(project: Path) -> list[dict]:
    return [json.loads(x) for x in (project / ".co/session_results.jsonl").read_text().splitlines() if x.strip()]


def test_running_line_then_done_line_with_ttl(start_host, project):
    host = start_host("tests.agents:echo_factory", "--result-ttl", "3600")
    sid = httpx.post(host.url + "/input", json={"prompt": "hi"}).json()["session_id"]
    mine = [x for x in lines(project) if x["session_id"] == sid]
    assert [x["status"] for x in mine] == ["running", "done"]
    for record in mine:
        assert record["expires"] - record["created"] == 3600
    assert mine[1]["result"] == "echo: hi"


def test_torn_and_garbage_lines_are_skipped_on_start(start_host, project):
    now = int(time.time())
    good = {
        "session_id": str(uuid.uuid4()),
        "status": "done",
        "result": "kept",
        "prompt": "p",
        "created": now,
        "expires": now + 3600,
    }
    (project / ".co").mkdir()
    (project / ".co/session_results.jsonl").write_text(
        "this is garbage\n\x00\x01\n" + json.dumps(good) + "\n" + '{"session_id": "torn", "status": "do'
    )
    host = start_host("tests.agents:echo_factory")
    assert httpx.get(f"{host.url}/sessions/{good['session_id']}").json()["result"] == "kept"
    assert httpx.get(f"{host.url}/sessions/torn").status_code == 404
    sid = httpx.post(host.url + "/input", json={"prompt": "after"}).json()["session_id"]
    assert httpx.get(f"{host.url}/sessions/{sid}").json()["status"] == "done"
    listed = [s["session_id"] for s in httpx.get(host.url + "/sessions").json()["sessions"]]
    assert sid in listed and good["session_id"] in listed


def test_running_record_of_a_killed_host_becomes_interrupted(start_host, project):
    host = start_host("tests.agents:slow_factory")
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(host.url + "/input", json={"prompt": "sleep 20"}, timeout=0.5)
    sid = wait_for(lambda: next((x["session_id"] for x in lines(project) if x["status"] == "running"), None))
    host.stop(signal.SIGKILL)
    assert lines(project)[-1]["status"] == "running"
    again = start_host("tests.agents:slow_factory")
    record = httpx.get(f"{again.url}/sessions/{sid}").json()
    assert record["status"] == "interrupted"
    listing = httpx.get(again.url + "/sessions").json()["sessions"]
    assert all(s["status"] != "running" for s in listing)


def test_expired_records_vanish_and_are_compacted_at_start_running_kept(start_host, project):
    now = int(time.time())
    hold = (
        "import sys, time; from sessions_app.liveness import FileLiveness as F; f = F(sys.argv[1]); f.start();"
        " print(f.token, flush=True); time.sleep(60)"
    )
    other_worker = subprocess.Popen(
        [sys.executable, "-c", hold, str(project / ".co" / "live")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    token = other_worker.stdout.readline().strip()
    other_worker.stdout.close()  # it prints nothing more
    try:
        old_done = {"session_id": "old-done", "status": "done", "created": now - 100, "expires": now - 10}
        # an expired `running` record whose writer (another worker on this machine) is alive: never cleaned
        old_running = {
            "session_id": "old-running",
            "status": "running",
            "created": now - 100,
            "expires": now - 10,
            "worker": token,
        }
        fresh = {"session_id": "fresh", "status": "done", "created": now, "expires": now + 3600}
        (project / ".co").mkdir(exist_ok=True)
        path = project / ".co/session_results.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in (old_done, old_running, fresh)))
        host = start_host("tests.agents:echo_factory")
        ids = [x["session_id"] for x in lines(project)]
        assert sorted(ids) == ["fresh", "old-running"]  # compacted: one line per kept id
        assert httpx.get(f"{host.url}/sessions/old-done").status_code == 404
        assert httpx.get(f"{host.url}/sessions/old-running").json()["status"] == "running"
        listed = {s["session_id"] for s in httpx.get(host.url + "/sessions").json()["sessions"]}
        assert listed == {"fresh", "old-running"}
    finally:
        other_worker.kill()
        other_worker.wait()


def test_expired_done_record_disappears_while_serving(start_host, project):
    host = start_host("tests.agents:echo_factory", "--result-ttl", "1")
    sid = httpx.post(host.url + "/input", json={"prompt": "short-lived"}).json()["session_id"]
    wait_for(lambda: httpx.get(f"{host.url}/sessions/{sid}").status_code == 404, timeout=10)
    assert sid not in {s["session_id"] for s in httpx.get(host.url + "/sessions").json()["sessions"]}
