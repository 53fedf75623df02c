"""Group commit of the JSONL store (issue 20): records queued meanwhile go out in one write, each caller
returns once its own line is in the file, and a record that cannot be stored fails its own caller only."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from sessions_app.jsonl import iter_lines
from sessions_app.store import SessionStore
from tests.conftest import REPO
from tests.support.wait import wait_for


def _in_threads(n: int, target) -> list[BaseException | object]:
    """Run ``target(i)`` in ``n`` threads at once; each slot holds what it returned or raised."""
    outcomes: list[BaseException | object] = [None] * n

    def run(i: int) -> None:
        try:
            outcomes[i] = target(i)
        except BaseException as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return outcomes, threads


def test_records_queued_during_a_write_go_out_together_and_each_caller_gets_its_own(tmp_path):
    store = SessionStore(tmp_path / "r.jsonl")
    store.create(session_id="first", prompt="p")
    writes_before = store.commit_stats.batches
    n = 12
    with store.commit_stats._lock:  # a write under way: the callers queue behind it
        outcomes, threads = _in_threads(n, lambda i: store.create(session_id=f"s{i}", prompt=f"prompt {i}"))
        wait_for(lambda: store.commit_stats.queued == n, what="every record queued")
    for t in threads:
        t.join(10)
    assert [r.session_id for r in outcomes] == [f"s{i}" for i in range(n)]
    assert store.commit_stats.batches == writes_before + 1  # one write for the twelve
    lines = list(iter_lines(store.path))
    assert len(lines) == n + 1 and len(store.path.read_bytes().splitlines()) == n + 1
    fresh = SessionStore(store.path)
    assert fresh.skipped_lines == 0
    for i in range(n):
        assert fresh.get(f"s{i}").prompt == f"prompt {i}"
        assert store.get(f"s{i}").data["prompt"] == f"prompt {i}"  # the writer's own index points at the lines


def test_many_threads_create_and_finish_turns_all_durable_and_parseable(tmp_path):
    store = SessionStore(tmp_path / "r.jsonl")

    def turns(i: int) -> int:
        for k in range(40):
            sid = f"t{i}-{k}"
            store.create(session_id=sid, prompt="x" * (i * 50))
            store.update(sid, status="done", result=f"r{i}-{k}", session={"messages": [{"role": "user"}]})
        return i

    outcomes, threads = _in_threads(8, turns)
    for t in threads:
        t.join(60)
    assert outcomes == list(range(8))
    raw = store.path.read_bytes().splitlines()
    assert len(raw) == 8 * 40 * 2 and all(json.loads(line)["session_id"] for line in raw)
    fresh = SessionStore(store.path)
    assert fresh.filter(status="done").count() == 320 and fresh.skipped_lines == 0
    assert fresh.get("t7-39").data["result"] == "r7-39"
    assert store.commit_stats.records == 640


def test_a_sweep_holding_the_flock_still_writes_through_the_group_commit(tmp_path):
    """``recover_interrupted`` writes while it holds the file lock (the lock is re-entrant for it)."""
    store = SessionStore(tmp_path / "r.jsonl")
    store.create(session_id="orphan", prompt="p")  # no liveness: its worker counts as dead
    assert SessionStore(store.path).recover_interrupted() == 1
    assert store.get("orphan").status == "interrupted"


_ONE_TOO_BIG = r"""
import json, resource, signal, sys, threading
from pathlib import Path
from common.errors import StorageUnavailable
from sessions_app.store import SessionStore

path = Path(sys.argv[1])
store = SessionStore(path)
store.create(session_id="before", prompt="p")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 4096, resource.RLIM_INFINITY))
outcome = {}

def create(sid, size):
    try:
        store.create(session_id=sid, prompt="x" * size)
        outcome[sid] = "stored"
    except StorageUnavailable:
        outcome[sid] = "refused"

threads = [threading.Thread(target=create, args=(sid, size))
           for sid, size in (("small-1", 100), ("huge", 20000), ("small-2", 100))]
with store.commit_stats._lock:
    for t in threads:
        t.start()
    while store.commit_stats.queued < 3:
        pass
for t in threads:
    t.join()
print(json.dumps({"outcome": outcome, "batches": store.commit_stats.batches}))
"""


def test_a_record_too_big_for_the_space_left_fails_its_own_caller_only(tmp_path):
    """The batch of three does not fit; it is rolled back and retried record by record."""
    path = tmp_path / "r.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _ONE_TOO_BIG, str(path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["outcome"] == {"small-1": "stored", "huge": "refused", "small-2": "stored"}
    raw = path.read_bytes()
    assert raw.endswith(b"\n")  # nothing half-written
    assert [x["session_id"] for x in iter_lines(path)] == ["before", "small-1", "small-2"]
    assert len(raw.splitlines()) == 3
    fresh = SessionStore(path)
    assert fresh.skipped_lines == 0 and fresh.get("small-2").status == "running"


def test_the_store_interface_is_unchanged_for_a_lone_writer(tmp_path):
    """One thread: every record is a batch of one, written before ``create``/``update`` return."""
    store = SessionStore(tmp_path / "r.jsonl")
    for i in range(5):
        store.create(session_id=f"a{i}", prompt="p")
        assert len(list(iter_lines(store.path))) == 2 * i + 1
        store.update(f"a{i}", status="done", result="ok")
    assert store.commit_stats.batches == store.commit_stats.records == 10
    assert Path(store.path).read_bytes().count(b"\n") == 10
