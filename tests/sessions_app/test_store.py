"""SessionStore on real files: the Django-style surface, recovery, compaction, concurrency, properties."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sessions_app.jsonl import iter_lines
from sessions_app.records import DoesNotExist
from sessions_app.store import SessionStore


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / ".co" / "session_results.jsonl", result_ttl=3600)


def test_create_update_get_and_lines(store):
    running = store.create(session_id="a", prompt="hi")
    assert running.status == "running"
    assert running.expires - running.created == pytest.approx(3600, abs=1)
    store.update("a", status="done", result="hello")
    got = store.get("a")
    assert got.status == "done" and got.data["result"] == "hello" and got.data["prompt"] == "hi"
    lines = list(iter_lines(store.path))
    assert [x["status"] for x in lines] == ["running", "done"]
    assert lines[0]["worker"] is None and "worker" not in lines[-1]  # (a store without liveness: no token)
    with pytest.raises(DoesNotExist):
        store.get("missing")
    with pytest.raises(DoesNotExist):
        store.update("missing", status="done")


def test_filter_and_newest_first(store):
    for i, sid in enumerate(["x", "y", "z"]):
        store.create(session_id=sid, prompt=f"Prompt {sid}", created=1000 + i, owner="0xabc" if sid == "y" else None)
    store.update("x", status="done")
    assert [r.session_id for r in store.all()] == ["z", "y", "x"]
    assert [r.session_id for r in store.filter(status="done")] == ["x"]
    assert [r.session_id for r in store.filter(status__in=["running"])] == ["z", "y"]
    assert [r.session_id for r in store.filter(owner="0xabc")] == ["y"]
    assert store.filter(prompt__icontains="PROMPT Z").count() == 1
    assert store.filter(session_id__startswith="y").first().session_id == "y"
    with pytest.raises(TypeError):
        store.filter(bogus=1)


def test_a_second_instance_sees_appends_of_the_first(tmp_path):
    path = tmp_path / "r.jsonl"
    one, two = SessionStore(path), SessionStore(path)
    one.create(session_id="s", prompt="p")
    assert two.get("s").status == "running"
    one.update("s", status="done")
    assert two.get("s").status == "done"


def test_torn_and_garbage_lines_are_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    good = {"session_id": "ok", "status": "done", "created": int(time.time()), "expires": int(time.time()) + 99}
    path.write_text('garbage\n[1,2]\n{"no_id": 1}\n' + json.dumps(good) + "\n" + '{"session_id": "torn", "sta')
    store = SessionStore(path)
    assert store.get("ok").status == "done"
    assert store.skipped_lines == 3
    with pytest.raises(DoesNotExist):
        store.get("torn")
    store.create(session_id="new", prompt="p")  # never fused onto the torn line
    assert SessionStore(path).get("new").status == "running"
    assert SessionStore(path).get("ok").status == "done"


def test_an_unterminated_last_line_is_dropped_never_revived(tmp_path):
    """A crash right before the newline leaves a whole JSON object without it: its write never returned."""
    path = tmp_path / "r.jsonl"
    now = int(time.time())
    kept = {"session_id": "kept", "status": "done", "created": now, "expires": now + 99}
    cut = {"session_id": "cut", "status": "done", "created": now, "expires": now + 99}
    path.write_text(json.dumps(kept) + "\n" + json.dumps(cut))
    store = SessionStore(path)
    with pytest.raises(DoesNotExist):
        store.get("cut")
    store.create(session_id="new", prompt="p")
    fresh = SessionStore(path)
    assert {r.session_id for r in fresh.all()} == {"kept", "new"}
    assert fresh.skipped_lines == 0
    assert path.read_text().splitlines()[0] == json.dumps(kept)


def test_compact_drops_expired_done_keeps_running(tmp_path):
    path = tmp_path / "r.jsonl"
    store = SessionStore(path, result_ttl=10)
    store.create(session_id="old-done", prompt="p")
    store.update("old-done", status="done")
    store.create(session_id="old-running", prompt="p")
    store.create(session_id="new-done", prompt="p")
    store.update("new-done", status="done", expires=int(time.time()) + 1000)
    expired: list[str] = []
    dropped = store.compact(now=time.time() + 100, on_expired=lambda r: expired.append(r.session_id))
    assert dropped == 1 and expired == ["old-done"]
    ids = [x["session_id"] for x in iter_lines(path)]
    assert sorted(ids) == ["new-done", "old-running"]
    assert not list(path.parent.glob("*.compact-*"))
    assert SessionStore(path).get("old-running").status == "running"


def _append_many(path: str, prefix: str, n: int) -> None:
    store = SessionStore(Path(path))
    for i in range(n):
        store.create(session_id=f"{prefix}-{i}", prompt="x" * 200)
        store.update(f"{prefix}-{i}", status="done", result="y" * 300)


def test_two_processes_appending_lose_nothing(tmp_path):
    path = tmp_path / "r.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), p, 300)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    raw = path.read_bytes().splitlines()
    assert len(raw) == 1200
    assert all(json.loads(line)["session_id"] for line in raw)
    store = SessionStore(path)
    assert store.skipped_lines == 0
    assert store.filter(status="done").count() == 600


class StoreMachine(RuleBasedStateMachine):
    """The latest line wins; completed records survive reopen and compaction; truncation never crashes."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="store-sm-"))
        self.path = self.dir / "r.jsonl"
        self.store = SessionStore(self.path, result_ttl=3600)
        self.model: dict[str, str] = {}

    ids = st.sampled_from([f"s{i}" for i in range(6)])

    @rule(sid=ids, prompt=st.text(max_size=20))
    def create(self, sid, prompt):
        self.store.create(session_id=sid, prompt=prompt)
        self.model[sid] = "running"

    @rule(sid=ids, status=st.sampled_from(["done", "failed", "cancelled"]), result=st.text(max_size=30))
    def finish(self, sid, status, result):
        if sid in self.model:
            self.store.update(sid, status=status, result=result)
            self.model[sid] = status

    @rule()
    def reopen(self):
        self.store = SessionStore(self.path, result_ttl=3600)

    @rule()
    def compact(self):
        assert self.store.compact() == 0

    @rule(fraction=st.floats(min_value=0, max_value=1))
    def truncate_then_reopen(self, fraction):
        size = self.path.stat().st_size if self.path.exists() else 0
        cut = int(size * fraction)
        with open(self.path, "ab") as fh:
            fh.truncate(cut)
        self.store = SessionStore(self.path, result_ttl=3600)
        survivors = {r.session_id: r.status for r in self.store.all()}
        assert set(survivors) <= set(self.model)
        self.model = survivors  # what a crash at that offset leaves is the new truth
        self.store.create(session_id="after-crash", prompt="p")
        self.model["after-crash"] = "running"

    @invariant()
    def latest_line_wins(self):
        seen = {r.session_id: r.status for r in self.store.all()}
        assert seen == self.model
        fresh = {r.session_id: r.status for r in SessionStore(self.path).all()}
        assert fresh == self.model

    def teardown(self):
        for f in self.dir.iterdir():
            f.unlink()
        os.rmdir(self.dir)


StoreMachine.TestCase.settings = settings(max_examples=50, deadline=None, derandomize=True)
test_store_state_machine = StoreMachine.TestCase


def test_a_record_reads_its_conversation_back_from_the_file_even_after_another_process_compacts(tmp_path):
    path = tmp_path / "session_results.jsonl"
    ours, theirs = SessionStore(path), SessionStore(path)  # two workers on one file
    session = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 5000}]}
    ours.create(session_id="s1", prompt="p" * 2000)
    ours.update("s1", status="done", result="ok", session=session)
    record = ours.get("s1")
    assert record.where is not None  # the index keeps where the line is, not the conversation
    theirs.compact()  # a new file (new inode) under our feet
    assert record.data["session"] == session and record.prompt == "p" * 2000
    assert ours.get("s1").session == session
    path.unlink()  # gone altogether: what the index knew, never an error
    assert record.data["session_id"] == "s1" and record.data["status"] == "done"
