"""The CPU gate (``TurnManager.cpu``): the host's own work in pool threads runs a few threads at a time.

Real runtime, real store and replay log, the demo agent; only the history writer is wrapped, to count how
many turns are inside the gated section at once.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hosting import activity
from hosting.runtime import get_runtime
from hosting.turns import CPU_SLOTS, TurnRequest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_turns_ending_together_write_their_records_a_few_at_a_time(monkeypatch):
    runtime = get_runtime()
    lock = threading.Lock()
    inside = most = calls = 0
    write = activity.write_session_yaml

    def counting(*args, **kwargs):
        nonlocal inside, most, calls
        with lock:
            inside += 1
            calls += 1
            most = max(most, inside)
        try:
            time.sleep(0.02)  # every other finished turn would pile in here meanwhile, were it not gated
            return write(*args, **kwargs)
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(activity, "write_session_yaml", counting)
    turns = 16
    assert runtime.config.pool_size >= turns
    results = await asyncio.gather(*(runtime.turns.run(TurnRequest(prompt="calculate 1+2")) for _ in range(turns)))
    assert [r.status for r in results] == ["done"] * turns
    assert all("3" in (r.result or "") for r in results)
    assert calls == turns and 1 <= most <= CPU_SLOTS, (calls, most)
    for r in results:  # and each record says so
        assert runtime.store.get(r.session_id).status == "done"
