"""``GET /metrics`` on a real ``runhost --workers 2`` announcing on our relay: known turns over HTTP, WS (on
both workers) and the relay, then exact counts and label sets from one scrape, whichever worker answers it;
anonymous scrapes from a non-loopback address are refused."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
import websockets.sync.client as ws_client
from nacl.signing import SigningKey
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NO_TURN_LIMITS, HostProcess
from tests.support.hosts import RelayProcess, wait_listed
from tests.support.wait import wait_for as support_wait_for
from tests.support.ws import ws_turn_sync
from trust.identity import AgentIdentity

pytestmark = [pytest.mark.slow]
TOKEN = "metrics-admin-token-5d1c9e"
WORKER_PROTOCOLS = ["connectonion-worker-0", "connectonion-worker-1"]
HTTP_TURNS, WS_TURNS_PER_WORKER, RELAY_TURNS = 3, 1, 2


def outside_address() -> str | None:
    """This machine's address on a non-loopback interface (the route a packet to a public address takes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.250", 9))  # TEST-NET: nothing is sent for a UDP connect
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def label_sets(found: dict, name: str) -> set[frozenset]:
    return {labels for (sample, labels) in found if sample == name}


def wait_for(condition, what: str, timeout: float = 40):
    """Poll through the moments a worker or the relay is not answering yet."""
    return support_wait_for(condition, timeout, what, interval=0.1, ignore=(httpx.HTTPError, ValueError, KeyError))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Our relay, and a two-worker host (announcing no direct endpoint) bound to every interface."""
    folder: Path = tmp_path_factory.mktemp("metrics")
    relay = RelayProcess(cwd=folder).start()
    project = folder / "project"
    (project / ".co").mkdir(parents=True)
    (project / ".co" / "host.yaml").write_text("announce_loopback: false\n")
    host = HostProcess(
        project,
        "--workers",
        "2",
        "--host",
        "0.0.0.0",
        "--relay-url",
        relay.base,
        *NO_TURN_LIMITS,
        env={"CONNECTONION_ADMIN_TOKEN": TOKEN},
    )
    try:
        host.start()
        address = httpx.get(host.url + "/info", timeout=5).json()["address"]
        wait_listed(relay.http, address)
        yield host, relay, address
    finally:
        host.stop()
        relay.stop()


def ws_turn(host: HostProcess, worker: int) -> dict:
    """One INPUT on a socket the given worker serves (the other worker is paused while it runs)."""
    with host.only_worker(worker):
        return ws_turn_sync(host.ws_url, "calculate (2+3)*7")


def test_counts_and_label_sets_after_known_traffic_over_all_three_transports(stack):
    from hosting.client import connect

    host, relay, address = stack
    for _ in range(HTTP_TURNS):
        assert httpx.post(host.url + "/input", json={"prompt": "calculate (2+3)*7"}, timeout=30).status_code == 200
    for worker in (0, 1):
        for _ in range(WS_TURNS_PER_WORKER):
            assert ws_turn(host, worker)["type"] == "OUTPUT"
    for _ in range(RELAY_TURNS):
        agent = connect(address, relay_url=relay.base, keys=AgentIdentity.from_signing_key(SigningKey.generate()))
        # With keys our client now goes direct, sealed, to the host's LAN endpoint (issue 19): these turns must
        # count as relayed, so the client skips the endpoint lookup and stays on the relay.
        agent.agent._resolved = True
        assert "35" in agent.input("calculate (2+3)*7")
        assert agent.transport == "relay"
    ws_turns = 2 * WS_TURNS_PER_WORKER
    total = HTTP_TURNS + ws_turns + RELAY_TURNS

    def settled():  # a turn's end is counted right after its answer leaves: poll until all are in
        found = samples(httpx.get(host.url + "/metrics", timeout=5).text)
        ended = sum(v for (name, _), v in found.items() if name == "connectonion_turns_ended_total")
        return found if ended == total else None

    found = wait_for(settled, "every turn to be counted as ended")
    for transport, count in (("http", HTTP_TURNS), ("ws", ws_turns), ("relay", RELAY_TURNS)):
        assert value(found, "connectonion_turns_started_total", transport=transport) == count
        assert value(found, "connectonion_turns_ended_total", transport=transport, status="done") == count
        assert value(found, "connectonion_turn_duration_seconds_count", transport=transport, status="done") == count
        assert value(found, "connectonion_turn_first_event_seconds_count", transport=transport) == count
    assert label_sets(found, "connectonion_turns_started_total") == {
        frozenset({("transport", t)}) for t in ("http", "ws", "relay")
    }
    assert label_sets(found, "connectonion_turns_ended_total") == {
        frozenset({("transport", t), ("status", "done")}) for t in ("http", "ws", "relay")
    }
    assert label_sets(found, "connectonion_tool_calls_total") == {
        frozenset({("tool", "calculate"), ("status", "completed")})
    }
    assert value(found, "connectonion_tool_calls_total", tool="calculate", status="completed") == total
    assert value(found, "connectonion_tool_duration_seconds_count", tool="calculate") == total
    # the demo agent, like connectonion's Agent, asks its "model" twice: for the tool call, then for the answer
    assert value(found, "connectonion_model_calls_total", model="demo/rules", status="success") == 2 * total
    assert label_sets(found, "connectonion_model_tokens_total") == set()  # the demo agent reports no usage
    assert value(found, "connectonion_trust_decisions_total", level="careful", outcome="accept") >= total
    assert {dict(labels)["outcome"] for labels in label_sets(found, "connectonion_trust_decisions_total")} == {"accept"}
    assert value(found, "connectonion_turns_in_flight") == 0
    assert value(found, "connectonion_pool_queued_turns") == 0
    assert value(found, "connectonion_relay_link_up") == 1
    assert value(found, "connectonion_store_write_seconds_count") >= 2 * total  # running + done per turn
    assert value(found, "connectonion_replay_log_write_seconds_count") >= 1
    assert value(found, "connectonion_rate_limit_refusals_total", limit="rate") == 0


def test_open_websockets_are_summed_over_the_workers(stack):
    host, _, _ = stack
    sockets = []
    try:
        for worker in (0, 1):
            sockets.append(_socket_on(host, worker))
        found = samples(httpx.get(host.url + "/metrics", timeout=5).text)
        assert value(found, "connectonion_websockets_open") == 2
    finally:
        for ws in sockets:
            ws.close()
    wait_for(
        lambda: value(samples(httpx.get(host.url + "/metrics", timeout=5).text), "connectonion_websockets_open") == 0,
        "the closed sockets to be uncounted",
    )


def _socket_on(host: HostProcess, worker: int):
    """A socket on ``worker``: the other worker is paused while it connects, so only this one can accept."""
    with host.only_worker(worker):
        ws = ws_client.connect(host.ws_url, subprotocols=WORKER_PROTOCOLS, open_timeout=10, legacy=True)
    assert ws.subprotocol == f"connectonion-worker-{worker}", ws.subprotocol
    return ws


def test_a_scrape_from_a_non_loopback_address_needs_the_admin_token(stack):
    host, _, _ = stack
    outside = outside_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    url = f"http://{outside}:{host.port}/metrics"
    anonymous = httpx.get(url, timeout=5)
    assert anonymous.status_code == 401 and anonymous.json() == {"error": "unauthorized"}
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    allowed = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert allowed.status_code == 200 and allowed.headers["content-type"].startswith("text/plain")
    assert "connectonion_turns_started_total" in allowed.text
    local = httpx.get(host.url + "/metrics", timeout=5)
    assert local.status_code == 200
