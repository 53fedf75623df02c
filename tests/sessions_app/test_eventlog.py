"""The replay log's group commit: readers in the process never see a gap; other processes see committed rows."""

from __future__ import annotations

import sqlite3
import threading

from sessions_app.eventlog import EventLog


def _event(seq: int) -> dict:
    return {"type": "tool_call", "id": str(seq), "name": f"step {seq}"}


def test_appended_events_are_readable_at_once_and_committed_by_flush(tmp_path):
    log = EventLog(tmp_path / "events.sqlite3")
    other = EventLog(tmp_path / "events.sqlite3")  # another worker's view of the same file
    blocker = sqlite3.connect(tmp_path / "events.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock: nothing can be committed yet
    for seq in range(1, 51):
        log.append("s1", seq, 1, _event(seq))
    assert [e["id"] for e in log.after("s1", 0)] == [str(n) for n in range(1, 51)]
    assert log.last_seq("s1") == 50 and log.last_turn("s1") == 1 and log.turn_of("s1", 7) == 1
    assert other.after("s1", 0) == [] and not log.flush(timeout=0.2)
    blocker.execute("COMMIT")
    assert log.flush(timeout=10)
    assert [e["id"] for e in other.after("s1", 45)] == ["46", "47", "48", "49", "50"]
    rows = sqlite3.connect(tmp_path / "events.sqlite3").execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert rows == 50


def test_concurrent_turns_lose_and_duplicate_nothing(tmp_path):
    log = EventLog(tmp_path / "events.sqlite3")

    def turn(session: str) -> None:
        for seq in range(1, 201):
            log.append(session, seq, 1, _event(seq))

    threads = [threading.Thread(target=turn, args=(f"s{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    seen: list[int] = []
    while any(t.is_alive() for t in threads):  # a reader racing the writer thread: always a gapless prefix
        got = [int(e["id"]) for e in log.after("s3", 0)]
        assert got == list(range(1, len(got) + 1))
        seen = got
    for t in threads:
        t.join()
    assert log.flush(timeout=10)
    for i in range(8):
        assert [int(e["id"]) for e in log.after(f"s{i}", 0)] == list(range(1, 201))
    assert len(seen) <= 200
    assert log.after("s3", 150, turn=2) == [] and len(log.after("s3", 150, turn=1)) == 50


def test_paged_reads_stay_in_order_across_committed_and_pending_rows(tmp_path):
    log = EventLog(tmp_path / "events.sqlite3")
    for seq in range(1, 31):
        log.append("s", seq, 1, _event(seq))
    log.flush()
    for seq in range(31, 41):
        log.append("s", seq, 1, _event(seq))
    assert [e["id"] for e in log.after("s", 0, limit=25)] == [str(n) for n in range(1, 26)]
    assert [e["id"] for e in log.after("s", 25, limit=25)] == [str(n) for n in range(26, 41)]


def test_delete_and_purge_see_queued_rows(tmp_path):
    log = EventLog(tmp_path / "events.sqlite3")
    for seq in range(1, 11):
        log.append("gone", seq, 1, _event(seq))
    log.delete_session("gone")
    assert log.after("gone", 0) == [] and log.last_seq("gone") == 0
    log.append("old", 1, 1, _event(1))
    assert log.purge(older_than=float("inf")) >= 1
    assert log.after("old", 0) == []


def test_pages_bounded_in_bytes_skip_nothing_across_committed_and_pending_rows(tmp_path):
    """Issue 15.4: a viewer catching up reads the log in pages of at most ``max_bytes`` (at least one event)."""
    log = EventLog(tmp_path / "events.sqlite3")
    big = lambda seq: {**_event(seq), "text": "x" * 1_000}  # noqa: E731
    for seq in range(1, 31):
        log.append("s", seq, 1, big(seq))
    log.flush()
    for seq in range(31, 41):
        log.append("s", seq, 1, big(seq))  # still unwritten: merged into reads
    seen, last = [], 0
    while page := log.after("s", last, max_bytes=5_000):
        assert len(page) <= 5
        seen += [int(e["id"]) for e in page]
        last = seen[-1]
    assert seen == list(range(1, 41))
    assert [e["id"] for e in log.after("s", 0, max_bytes=10)] == ["1"]  # one event larger than the page


def test_a_terminal_event_returns_only_once_the_turn_is_committed(tmp_path):
    """Issue 20: a turn's events are in the log (visible to every worker) before its answer is sent."""
    log = EventLog(tmp_path / "events.sqlite3")
    other = EventLog(tmp_path / "events.sqlite3")  # another worker's view of the same file
    blocker = sqlite3.connect(tmp_path / "events.sqlite3", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock for a moment
    released = threading.Event()

    def let_go() -> None:
        released.set()  # (before the COMMIT: an append that waited for the lock returns after this)
        blocker.execute("COMMIT")

    release = threading.Timer(0.3, let_go)
    release.start()
    for seq in range(1, 4):
        log.append("s1", seq, 1, _event(seq))
    log.append("s1", 4, 1, {"type": "OUTPUT", "id": "4", "result": "done"})
    assert released.is_set()  # the terminal append waited for the other writer's lock, it was not only queued
    release.join()
    assert [e["id"] for e in other.after("s1", 0)] == ["1", "2", "3", "4"]  # committed, not only queued
