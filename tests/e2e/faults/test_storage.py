"""FI6, FI7: ``.co`` on a 2 MiB tmpfs filled to the last byte, then made read-only (root only; see Tmpfs).

Pass criteria (HARDENING §4): POST /input answers 503 "storage unavailable" fast, the process stays up,
reads keep working, no torn line is left in the JSONL, and once space (or write access) is back the next
turn is 200 without a restart.
"""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.faults.conftest import healthy, jsonl, statuses

pytestmark = pytest.mark.slow


def _turn(host, prompt: str = "hi") -> httpx.Response:
    return httpx.post(host.url + "/input", json={"prompt": prompt}, timeout=30)


def _refused_for_storage(host, prompt: str) -> None:
    r = _turn(host, prompt)  # answered, not hung: the client's timeout bounds the wait
    assert r.status_code == 503, r.text
    assert r.json() == {"error": "storage unavailable"}
    assert host.proc.poll() is None  # still up


def test_a_full_disk_is_503_and_the_next_turn_after_freeing_space_is_200(co_tmpfs, start_host, project):
    host = start_host("tests.agents:echo_factory")
    before = _turn(host, "before")
    assert before.status_code == 200
    co_tmpfs.fill()
    for i in range(3):
        _refused_for_storage(host, f"while full {i} " + "x" * 2000)
    assert healthy(host.url)
    got = httpx.get(f"{host.url}/sessions/{before.json()['session_id']}")
    assert got.status_code == 200 and got.json()["status"] == "done"

    co_tmpfs.free()
    after = _turn(host, "after")
    assert after.status_code == 200 and after.json()["result"] == "echo: after", after.text
    records, torn = jsonl(project)
    assert torn == [], torn  # a write cut short by ENOSPC is rolled back, never left as a torn line
    assert statuses(project)[after.json()["session_id"]] == ["running", "done"]
    for sid, seq in statuses(project).items():  # a turn refused midway ends `failed`, never stays running
        assert seq[-1] in ("done", "failed"), (sid, seq)
        assert seq.count("failed") + seq.count("done") == 1, (sid, seq)
    refused = [r for r in records if "while full" in str(r.get("prompt")) and r["status"] == "failed"]
    for record in refused:
        assert httpx.get(f"{host.url}/sessions/{record['session_id']}").json()["status"] == "failed"


def test_a_read_only_co_refuses_writes_keeps_reads_and_recovers(co_tmpfs, start_host, project):
    host = start_host("tests.agents:echo_factory")
    before = _turn(host, "before")
    assert before.status_code == 200
    sid = before.json()["session_id"]
    co_tmpfs.read_only(True)
    try:
        for i in range(3):
            _refused_for_storage(host, f"read-only {i}")
        assert httpx.get(f"{host.url}/sessions/{sid}").json()["status"] == "done"
        assert httpx.get(f"{host.url}/sessions").status_code == 200
        assert healthy(host.url)
        assert httpx.get(host.url + "/info").status_code == 200
    finally:
        co_tmpfs.read_only(False)
    after = _turn(host, "after")
    assert after.status_code == 200 and after.json()["result"] == "echo: after", after.text
    again = httpx.post(host.url + "/input", json={"prompt": "continue", "session_id": sid}, timeout=30)
    assert again.status_code == 200, again.text
    assert jsonl(project)[1] == []
    for sid, seq in statuses(project).items():
        assert seq[-1] in ("done", "failed"), (sid, seq)


def test_an_end_of_turn_kept_while_the_disk_was_full_is_written_once(co_tmpfs):
    """Compaction or the next append writes it; neither repeats it."""
    from common.errors import StorageUnavailable
    from sessions_app.store import SessionStore

    path = co_tmpfs.path / "results.jsonl"
    store = SessionStore(path)
    store.create(session_id="a", prompt="p")
    co_tmpfs.fill()
    with pytest.raises(StorageUnavailable):
        store.update("a", status="failed", error="storage unavailable", result="x" * 8192)
    assert store.get("a").status == "failed"  # this process answers with it meanwhile
    co_tmpfs.free()
    store.compact()  # the hourly compaction may come first: it writes the kept record...
    store.create(session_id="b", prompt="p")  # ...and the next append must not write it again
    mine = [line for line in path.read_text().splitlines() if '"session_id":"a"' in line]
    assert len(mine) == 1 and '"status":"failed"' in mine[0], mine
    assert SessionStore(path).get("a").status == "failed"
