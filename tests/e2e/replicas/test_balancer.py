"""Three replicas behind haproxy round robin, no stickiness (issue 18).

Three "machines" (project folders, same key), one PostgreSQL database made for this module, one Redis of
our own, and haproxy with ``deploy/haproxy.cfg``. Every request goes through the balancer; haproxy names the
replica that answered in ``X-Served-By`` (also on a WebSocket's 101), which is how a test knows that a
reconnect landed elsewhere. The SIGKILL test comes last: it leaves two replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid

import httpx
import psycopg
import pytest
import websockets

from tests.e2e.replicas.conftest import Haproxy, Machines
from tests.support.wait import wait_for
from tests.support.ws import WS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_url, redis):
    group = Machines(tmp_path_factory.mktemp("machines"), pg_url, redis.url)
    try:
        hosts = group.start(3)
        balancer = Haproxy(tmp_path_factory.mktemp("haproxy"), [f"127.0.0.1:{h.port}" for h in hosts]).start()
        try:
            yield group, balancer
        finally:
            balancer.stop()
    finally:
        group.stop()


def _served_by(response: httpx.Response) -> str:
    return response.headers["x-served-by"]


async def _ws(balancer: Haproxy, *, not_on: str | None = None) -> tuple[WS, str]:
    """A socket through the balancer (on a replica other than ``not_on``: round robin gets there quickly)."""
    for _ in range(12):
        sock = await websockets.connect(balancer.ws_url, max_size=2**24, ping_interval=None)
        replica = sock.response.headers["x-served-by"]
        if replica != not_on:
            return WS(sock), replica
        await sock.close()
    raise AssertionError(f"12 sockets in a row landed on {not_on}")


@contextlib.asynccontextmanager
async def _watched_on_another_replica(balancer: Haproxy, prompt: str, until: str):
    """A WS turn started on one replica (``runner``), run until ``until``, and a ``viewer`` attached to it through
    another replica; yields both sockets, open, and the session id."""
    runner, where = await _ws(balancer)
    viewer, _ = await _ws(balancer, not_on=where)
    async with runner, viewer:
        await runner.send({"type": "INPUT", "prompt": prompt})
        sid = (await runner.until(until))[0]["session_id"]
        await viewer.send({"type": "ATTACH", "session_id": sid})
        assert (await viewer.recv())["status"] == "running"
        yield runner, viewer, sid


def test_a_multi_turn_http_conversation_over_several_replicas_keeps_its_history(cluster):
    group, balancer = cluster
    sid = str(uuid.uuid4())
    replicas = []
    with httpx.Client(base_url=balancer.url, timeout=30) as client:
        for i in range(6):
            response = client.post("/input", json={"prompt": f"calculate {i}+1", "session": {"session_id": sid}})
            assert response.status_code == 200, response.text
            replicas.append(_served_by(response))
        body = response.json()
    assert len(set(replicas)) == 3, replicas  # round robin: every replica ran some of the turns
    assert body["session"]["turn"] == 6
    prompts = [m["content"] for m in body["session"]["messages"] if m["role"] == "user"]
    assert prompts == [f"calculate {i}+1" for i in range(6)]
    for host in group.hosts:  # GET /sessions/{id} on every replica, directly
        record = httpx.get(f"{host.url}/sessions/{sid}").json()
        assert record["status"] == "done" and record["session"]["turn"] == 6, record
        assert sid in {s["session_id"] for s in httpx.get(host.url + "/sessions?limit=1000").json()["sessions"]}


def test_a_ws_client_drops_mid_turn_and_resumes_on_another_replica_exactly_once(cluster):
    _, balancer = cluster

    async def scenario() -> None:
        ws, first = await _ws(balancer)
        async with ws:
            await ws.send({"type": "INPUT", "prompt": "count to 8 slowly"})
            sid = (await ws.recv())["session_id"]
            before = [await ws.recv() for _ in range(4)]
        await asyncio.sleep(0.8)  # events happen while nobody is connected
        ws, _second = await _ws(balancer, not_on=first)
        async with ws:
            await ws.send({"type": "ATTACH", "session_id": sid, "last_msg_id": before[-1]["id"]})
            connected = await ws.recv()
            assert connected["type"] == "CONNECTED" and connected["status"] == "running", connected
            after = [f for f in await ws.until("OUTPUT", timeout=30) if f["type"] != "AGENT_PROFILE"]
        ids = [int(f["id"]) for f in before + after]
        assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # every missed event once, in order
        assert after[-1]["result"] == "1, 2, 3, 4, 5, 6, 7, 8"

    asyncio.run(scenario())


def test_an_approval_asked_on_one_replica_is_answered_on_another(cluster):
    _, balancer = cluster

    async def scenario() -> None:
        async with _watched_on_another_replica(balancer, "save a note: milk", "approval_needed") as (runner, viewer, _):
            ask = (await viewer.until("approval_needed"))[-1]
            await viewer.send({"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once", "request_id": ask["id"]})
            output = (await runner.until(("OUTPUT", "ERROR"), timeout=30))[-1]
            assert output["type"] == "OUTPUT" and "note saved: milk" in output["result"], output

    asyncio.run(scenario())


def test_cancel_from_another_replica_ends_the_turn_cancelled(cluster):
    group, balancer = cluster

    async def scenario() -> str:
        async with _watched_on_another_replica(balancer, "count to 20 slowly", "tool_result") as (runner, viewer, sid):
            await viewer.send({"type": "CANCEL"})
            end = (await runner.until(("OUTPUT", "ERROR"), timeout=30))[-1]
            assert end["type"] == "OUTPUT" and end["status"] == "cancelled", end  # D29
        return sid

    sid = asyncio.run(scenario())
    record = wait_for(lambda: httpx.get(f"{group.hosts[2].url}/sessions/{sid}").json(), what="record")
    assert record["status"] == "cancelled", record


def test_1000_concurrent_turns_none_lost_none_duplicated(cluster, pg_url):
    _, balancer = cluster
    ids = [str(uuid.uuid4()) for _ in range(1000)]

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=balancer.url, timeout=120, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post("/input", json={"prompt": f"calculate {i}+1", "session": {"session_id": sid}})
                    for i, sid in enumerate(ids)
                )
            )

    responses = asyncio.run(flood())
    assert [r.status_code for r in responses].count(200) == 1000, {r.status_code for r in responses}
    assert {_served_by(r) for r in responses} == {"replica0", "replica1", "replica2"}
    with psycopg.connect(pg_url) as db:
        rows = db.execute(
            "SELECT session_id, status, data FROM sessions_app_result WHERE session_id = ANY(%s)", (ids,)
        ).fetchall()
    assert len(rows) == 1000 and {r[1] for r in rows} == {"done"}
    assert all('"turn":1,' in r[2] for r in rows)  # each turn ran once: a second run would be turn 2
    for i, sid in enumerate(ids[:50]):
        assert responses[i].json()["result"] == f"{i}+1 = {i + 1}"


def test_redis_restarted_under_load_errors_are_clear_and_service_resumes(cluster, redis):
    group, balancer = cluster
    outcomes: list[tuple[int, dict]] = []
    stop = time.monotonic() + 6

    async def load() -> None:
        async with httpx.AsyncClient(base_url=balancer.url, timeout=30) as client:

            async def one(i: int) -> None:
                while time.monotonic() < stop:
                    try:
                        r = await client.post("/input", json={"prompt": f"calculate {i}+2"})
                        outcomes.append((r.status_code, r.json()))
                    except httpx.HTTPError as exc:
                        outcomes.append((0, {"error": repr(exc)}))

            await asyncio.gather(*(one(i) for i in range(8)))

    async def outage() -> None:
        await asyncio.sleep(1.5)
        redis.kill()
        await asyncio.sleep(2.0)
        redis.start()

    async def both() -> None:
        await asyncio.gather(load(), outage())

    asyncio.run(both())
    assert outcomes
    for status, body in outcomes:  # a turn either ran, or was refused with a reason
        assert status == 200 or (status == 503 and body.get("error")), (status, body)
    assert sum(1 for s, _ in outcomes if s == 200) > 0
    for host in group.hosts:  # every replica serves again, without a restart
        ok = wait_for(
            lambda h=host: (
                httpx.post(h.url + "/input", json={"prompt": "calculate 1+1"}, timeout=30).status_code == 200
            ),
            timeout=30,
            what="turns again",
        )
        assert ok

    async def ws_again() -> None:
        ws, _ = await _ws(balancer)
        async with ws:
            await ws.send({"type": "INPUT", "prompt": "calculate 3*3"})
            assert (await ws.until(("OUTPUT", "ERROR"), timeout=30))[-1]["type"] == "OUTPUT"

    asyncio.run(ws_again())


def test_sigkill_a_replica_its_turn_reads_interrupted_within_the_lease_and_takes_a_new_turn(cluster):
    group, balancer = cluster

    async def start() -> tuple[str, str]:
        ws, where = await _ws(balancer)
        await ws.send({"type": "INPUT", "prompt": "count to 50 slowly"})
        sid = (await ws.recv())["session_id"]
        await ws.until("tool_result")
        return sid, where

    sid, where = asyncio.run(start())
    victim = group.hosts[int(where.removeprefix("replica"))]
    os.killpg(victim.proc.pid, signal.SIGKILL)
    survivor = next(h for h in group.hosts if h is not victim)
    wait_for(
        lambda: httpx.get(f"{survivor.url}/sessions/{sid}").json()["status"] == "interrupted",
        timeout=20,
        what="the dead replica's turn reads interrupted (lease_seconds: 3)",
    )
    with contextlib.suppress(httpx.HTTPError):  # haproxy notices the dead server within its checks
        wait_for(lambda: httpx.get(balancer.url + "/health", timeout=5).status_code == 200, timeout=10)
    again = httpx.post(
        balancer.url + "/input", json={"prompt": "calculate 2+2", "session": {"session_id": sid}}, timeout=30
    )
    assert again.status_code == 200 and again.json()["status"] == "done", again.text
