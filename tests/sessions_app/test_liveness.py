"""D30: a running turn's liveness is a lock its process holds, never a pid (zombies and reused pids lie)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from sessions_app.liveness import FileLiveness
from sessions_app.store import SessionStore
from tests.conftest import REPO

# A worker in another process: claims its token, writes the running record of `sid`, then sleeps or exits.
WORKER = """
import sys, time
from pathlib import Path
from sessions_app.liveness import FileLiveness
from sessions_app.store import SessionStore
folder, path, sid, linger = sys.argv[1:5]
liveness = FileLiveness(Path(folder))
liveness.start()
SessionStore(Path(path), liveness=liveness).create(session_id=sid, prompt="p")
print(liveness.token, flush=True)
time.sleep(float(linger))
"""


def _worker(tmp_path: Path, sid: str, linger: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path / "live"), str(tmp_path / "r.jsonl"), sid, str(linger)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    token = proc.stdout.readline().strip()
    proc.stdout.close()  # the worker prints nothing more
    assert token, "the worker did not start"
    return proc, token


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _sweeper(tmp_path: Path) -> SessionStore:
    liveness = FileLiveness(tmp_path / "live")
    liveness.start()
    return SessionStore(tmp_path / "r.jsonl", liveness=liveness)


def test_a_zombie_worker_is_dead_though_its_pid_answers(tmp_path):
    zombie, _token = _worker(tmp_path, "z", linger=0)
    try:
        while _state(zombie.pid) != "Z":  # exited, not reaped: kill(pid, 0) still succeeds
            time.sleep(0.01)
        os.kill(zombie.pid, 0)
        store = _sweeper(tmp_path)
        assert store.recover_interrupted() == 1
        assert store.get("z").status == "interrupted"
    finally:
        zombie.wait()


def test_a_live_worker_keeps_its_turn_and_a_killed_one_loses_it(tmp_path):
    live, live_token = _worker(tmp_path, "live", linger=60)
    killed, killed_token = _worker(tmp_path, "killed", linger=60)
    try:
        store = _sweeper(tmp_path)
        assert store.recover_interrupted() == 0
        killed.kill()
        killed.wait()
        assert store.recover_interrupted() == 1
        assert store.get("killed").status == "interrupted"
        assert store.get("live").status == "running"
        assert store.recover_interrupted() == 0  # once
        assert not (tmp_path / "live" / f"{killed_token}.lock").exists()  # a dead worker's file is removed
        assert (tmp_path / "live" / f"{live_token}.lock").exists()
        store.create(session_id="killed", prompt="again")  # the session takes a new turn
        assert store.get("killed").status == "running"
    finally:
        live.kill()
        live.wait()


def test_a_record_naming_a_live_pid_but_no_lock_is_interrupted(tmp_path):
    """A record of an older version names only a pid; that pid is alive (here, this very process, as a reused
    pid would be): it proves nothing, and the turn is recorded interrupted."""
    now = int(time.time())
    old = {
        "session_id": "old",
        "status": "running",
        "created": now,
        "expires": now + 60,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    (tmp_path / "r.jsonl").write_text(json.dumps(old) + "\n")
    store = _sweeper(tmp_path)
    assert store.recover_interrupted() == 1
    record = store.get("old")
    assert record.status == "interrupted"
    assert "pid" not in record.data and "worker" not in record.data


def test_two_sweepers_mark_a_dead_turn_once(tmp_path):
    dead, _ = _worker(tmp_path, "d", linger=0)
    dead.wait()
    one, two = _sweeper(tmp_path), _sweeper(tmp_path)
    assert one.recover_interrupted() + two.recover_interrupted() == 1
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["running", "interrupted"]


def test_a_turn_that_ended_meanwhile_is_left_as_it_ended(tmp_path):
    dead, _ = _worker(tmp_path, "e", linger=0)
    dead.wait()
    store = _sweeper(tmp_path)
    seen = store.get("e")
    SessionStore(tmp_path / "r.jsonl").update("e", status="done")  # another worker wrote its end first
    assert store._interrupt(seen) is False
    assert store.get("e").status == "done"
