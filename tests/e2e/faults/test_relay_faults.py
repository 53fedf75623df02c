"""FI13: relay trouble never touches local turns, and the announce comes back after the relay does.

Already covered in tests/hosting/relay and not repeated here: a relay restart followed by reconnect and
re-announce (test_relay_link.py::test_a_relay_restart_is_followed_by_reconnect_and_reannounce,
test_relay_host_e2e.py::test_host_re_announces_after_the_relay_restarts), garbage from the relay
(test_relay_link.py::test_garbage_from_the_relay_is_logged_and_ignored), 10,000 conn_ids
(…::test_ten_thousand_conn_ids_are_capped), a flapping/absent relay's capped backoff
(…::test_backoff_grows_and_is_capped_while_the_relay_is_down), oversized frames (…_closes_with_1009_…).
This file adds the one row those leave out: 10 local turns running while the relay is SIGKILLed and flaps.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.conftest import NO_TURN_LIMITS
from tests.e2e.faults.conftest import statuses
from tests.hosting.relay.test_relay_host_e2e import _host
from tests.support.hosts import RelayProcess, wait_listed

pytestmark = pytest.mark.slow


async def _local_turns_during(port: int, n: int, chaos) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        turns = [asyncio.create_task(client.post("/input", json={"prompt": "sleep 3"})) for _ in range(n)]
        await asyncio.to_thread(chaos)
        return await asyncio.gather(*turns)


def test_local_turns_finish_while_the_relay_is_killed_and_flaps(tmp_path, project):
    relay = RelayProcess(port=None, cwd=tmp_path).start()
    relays = [relay]
    try:
        with _host(relay, project, tmp_path, None, "tests.agents:slow_factory", *NO_TURN_LIMITS) as host:
            host.wait_relay_state("connected")

            def chaos() -> None:
                time.sleep(0.5)
                relay.stop(signal.SIGKILL)
                for _ in range(2):  # flap: up for a moment, killed again
                    time.sleep(0.3)
                    relays.append(RelayProcess(port=relay.port, cwd=tmp_path).start())
                    time.sleep(0.3)
                    relays[-1].stop(signal.SIGKILL)

            answers = asyncio.run(_local_turns_during(host.port, 10, chaos))
            assert [r.status_code for r in answers] == [200] * 10, [r.text for r in answers]
            assert all(r.json()["status"] == "done" for r in answers)
            assert all(seq == ["running", "done"] for seq in statuses(project).values())
            back = RelayProcess(port=relay.port, cwd=tmp_path).start()
            relays.append(back)
            returned = time.monotonic()
            wait_listed(back.http, host.address, timeout=60)
            print(f"announced again {time.monotonic() - returned:.1f} s after the relay returned")
            assert host.health()["status"] == "healthy"
    finally:
        for process in relays:
            process.stop()
