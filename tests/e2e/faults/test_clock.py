"""FI11: the wall clock jumps ±10 min (``time-machine``; the host has no clock of its own to fake).

* the signature window follows the wall clock: what is signed at the new time passes, the old time fails;
* the result TTL never drops a ``running`` record, however far the clock runs ahead;
* waits use a monotonic clock (upstream #429): a jump neither ends an answer wait early nor stretches it.
"""

from __future__ import annotations

import threading
import time

import pytest
from nacl.signing import SigningKey

from common.errors import Unauthorized
from hosting.core.events import AnswerTimeout, TurnIO
from sessions_app.store import SessionStore
from tests.support.envelopes import signed
from trust.signing import address_of, verify_envelope

time_machine = pytest.importorskip("time_machine", reason="time-machine (requirements-test.txt) is needed")

JUMP = 600.0  # ±10 min, twice the 300 s signature window


def _signed(key: SigningKey, to: str, timestamp: float) -> dict:
    return signed(key, to, timestamp=int(timestamp), nonce=True, prompt="hi")


@pytest.mark.parametrize("jump", [JUMP, -JUMP])
def test_the_signature_window_follows_the_wall_clock(jump):
    key, ours = SigningKey.generate(), address_of(SigningKey.generate().verify_key)
    before = _signed(key, ours, time.time())
    with time_machine.travel(time.time() + jump, tick=True):
        fresh = _signed(key, ours, time.time())
        assert verify_envelope(fresh, our_address=ours, require_to=True).signer == address_of(key.verify_key)
        with pytest.raises(Unauthorized):
            verify_envelope(before, our_address=ours, require_to=True)


def test_the_ttl_never_drops_a_running_record(tmp_path):
    store = SessionStore(tmp_path / "results.jsonl", result_ttl=60)
    store.create(session_id="running", prompt="p")
    store.create(session_id="finished", prompt="p")
    store.update("finished", status="done", result="r")
    with time_machine.travel(time.time() + 10 * 86400, tick=True):  # far past every expiry
        assert store.get("running").status == "running"
        with pytest.raises(LookupError):
            store.get("finished")
        store.compact()
        again = SessionStore(tmp_path / "results.jsonl", result_ttl=60)  # what a restart reads
        assert again.get("running").status == "running"
        assert [r.session_id for r in again.all()] == ["running"]


@pytest.mark.parametrize("jump", [JUMP, -JUMP])
def test_answer_waits_use_a_monotonic_clock(jump):
    io = TurnIO(
        session_id="s", first_seq=0, emit=lambda event: None, interactive=True, answer_timeout=1.5, on_pending=None
    )
    with time_machine.travel(time.time(), tick=True) as traveller:
        timer = threading.Timer(0.3, traveller.shift, args=(jump,))
        timer.start()
        started = time.monotonic()
        with pytest.raises(AnswerTimeout):
            io.receive()
        waited = time.monotonic() - started
        timer.join()
    assert 1.4 < waited < 6, waited  # neither ended by the jump nor stretched by it
