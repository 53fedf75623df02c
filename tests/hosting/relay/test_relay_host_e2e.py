"""End to end through our relay: the released 1.9.2 client and our client ↔ ``manage.py runrelay`` ↔
``manage.py runhost --relay-url`` with the demo agent (PROTOCOL §10 items 110-113). Unless a test says
otherwise the host announces no direct endpoints, so every turn goes through the relay.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hosts import MANAGE, HostProcess, RelayProcess, ServerProcess, host_env, wait_listed
from tests.support.net import free_port
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow]


def _machine(tmp_path: Path) -> dict[str, str]:
    """A machine folder of the test's own (no ~/.co of the developer's leaks in)."""
    machine = tmp_path / "machine"
    return {"AGENT_CONFIG_PATH": str(machine), "HOME": str(machine.parent)}


def _relay_only_project(folder: Path) -> Path:
    (folder / ".co").mkdir(parents=True)
    # No direct endpoints: the released client must go through the relay (§10 item 110).
    (folder / ".co" / "host.yaml").write_text("announce_loopback: false\n")
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _relay_only_project(tmp_path / "project")


class Hosted(HostProcess):
    """A running ``runhost --relay-url`` process; ``address`` is its agent's, listed on the relay."""

    address = ""

    @property
    def log(self) -> Path:
        return self.log_path

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=2).json()

    def wait_relay_state(self, wanted: str, timeout: float = 30) -> dict:
        """``/health`` once its ``relay`` field starts with ``wanted``."""

        def body() -> dict | None:
            found = self.health()
            return found if str(found.get("relay", "")).startswith(wanted) else None

        return wait_for(body, timeout, f"/health relay {wanted!r}", ignore=(httpx.HTTPError, ValueError))


@contextlib.contextmanager
def _host(relay, project: Path, tmp_path: Path, extra_env: dict[str, str] | None = None, *args: str):
    host = Hosted(project, "--relay-url", relay.base, *args, env={**_machine(tmp_path), **(extra_env or {})})
    try:
        host.start()
        host.address = httpx.get(host.url + "/info", timeout=5).json()["address"]
        wait_listed(relay.http, host.address)
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="module")
def shared_relay(tmp_path_factory) -> Iterator[RelayProcess]:
    """One relay process for the tests that neither restart it nor need its registry empty (each host they start
    announces an address of its own)."""
    relay = RelayProcess(cwd=tmp_path_factory.mktemp("relay")).start()
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def hosted(tmp_path_factory, shared_relay: RelayProcess):
    """The shared relay plus one ``runhost --relay-url <relay>`` with the demo agent for the module's tests that
    only talk to it (each as a client and session of its own); yields (relay, address)."""
    folder = tmp_path_factory.mktemp("hosted")
    project = _relay_only_project(folder / "project")
    with _host(shared_relay, project, folder) as host:
        assert wait_listed(shared_relay.http, host.address)["endpoints"] == []
        yield shared_relay, host.address


def test_released_client_reaches_our_host_through_our_relay(hosted):
    from connectonion import connect

    relay, address = hosted
    agent = connect(address, relay_url=relay.base, keys=False)
    assert "hola" in agent.input("translate hello to spanish", timeout=60).text.lower()


def test_released_client_with_keys_continues_one_session_through_the_relay(hosted):
    from connectonion import address as co_address
    from connectonion import connect

    relay, address = hosted
    agent = connect(address, relay_url=relay.base, keys=co_address.generate())
    agent.input("my name is Ada", timeout=60)
    reply = agent.input("what is my name", timeout=60)
    assert "ada" in reply.text.lower()
    assert agent.current_session["turn"] == 2


def test_our_client_reaches_our_host_through_our_relay(hosted):
    from nacl.signing import SigningKey

    from hosting.client import connect
    from trust.identity import AgentIdentity

    relay, address = hosted
    agent = connect(address, relay_url=relay.base, keys=AgentIdentity.from_signing_key(SigningKey.generate()))
    assert "hola" in agent.input("translate hello to spanish").lower()
    assert agent.transport == "relay"


def test_announce_command_serves_the_real_conversation(project: Path, tmp_path: Path, shared_relay):
    from connectonion import connect

    relay = shared_relay
    cmd = [sys.executable, str(MANAGE), "announce", "--relay-url", relay.base, "--no-endpoints"]
    env = host_env(**_machine(tmp_path), CONNECTONION_HOST_ARGS=json.dumps({"project_dir": str(project)}))
    announcer = ServerProcess()
    announcer.spawn(cmd, cwd=project, env=env, log_path=tmp_path / "announce.log")
    try:
        found = wait_for(lambda: re.search(r"0x[0-9a-f]{64}", announcer.output()), 40, "the announced address")
        wait_listed(relay.http, found.group(0))
        reply = connect(found.group(0), relay_url=relay.base, keys=False).input("calculate (2+3)*7", timeout=60)
        assert "35" in reply.text
    finally:
        announcer.stop()


def _our_client(address: str, relay_base: str, **options):
    from nacl.signing import SigningKey

    from hosting.client import connect
    from trust.identity import AgentIdentity

    return connect(address, relay_url=relay_base, keys=AgentIdentity.from_signing_key(SigningKey.generate()), **options)


def test_banner_health_and_log_follow_the_relay_link(project: Path, tmp_path: Path, shared_relay):
    relay = shared_relay
    with _host(relay, project, tmp_path) as host:
        body = host.wait_relay_state("connected")
        assert body["relay"] == "connected"
        text = host.log.read_text()
        assert f"↻ relay (connecting to {relay.base})" in text
        assert "✓ relay" in text


def test_host_re_announces_after_the_relay_restarts(project: Path, tmp_path: Path, relay_process):
    relay = relay_process()
    with _host(relay, project, tmp_path) as host:
        host.wait_relay_state("connected")
        relay.stop()
        host.wait_relay_state("unreachable")  # /health tells the truth while the relay is away
        again = relay_process(port=relay.port)  # a fresh relay with an empty registry, same URL
        wait_listed(again.http, host.address, timeout=40)
        host.wait_relay_state("connected")
        reply = _our_client(host.address, again.base).input("calculate (2+3)*7")
        assert "35" in reply
        assert host.log.read_text().count("✓ relay") == 1  # the outage is the link's line, not another ✓


def test_our_client_prefers_the_announced_direct_endpoint(project: Path, tmp_path: Path, shared_relay):
    (project / ".co" / "host.yaml").write_text("announce_loopback: true\n")
    relay = shared_relay
    with _host(relay, project, tmp_path) as host:
        assert wait_listed(relay.http, host.address)["endpoints"]
        agent = _our_client(host.address, relay.base)
        assert "hola" in agent.input("translate hello to spanish").lower()
        assert agent.transport == "direct"


def test_our_client_falls_back_to_the_relay_when_the_endpoint_is_unreachable(
    project: Path, tmp_path: Path, shared_relay
):
    dead = free_port()  # announced, but nothing listens there
    relay = shared_relay
    with _host(relay, project, tmp_path, {"AGENT_PUBLIC_DOMAIN": f"127.0.0.1:{dead}"}) as host:
        assert wait_listed(relay.http, host.address)["endpoints"] == [
            f"https://127.0.0.1:{dead}",
            f"wss://127.0.0.1:{dead}/ws",
        ]
        agent = _our_client(host.address, relay.base)
        assert "hola" in agent.input("translate hello to spanish").lower()
        assert agent.transport == "relay"


def test_approval_is_answered_through_the_relay(hosted):
    relay, address = hosted
    asked: list[dict] = []

    def approve(event: dict) -> bool:
        asked.append(event)
        return True

    agent = _our_client(address, relay.base, on_approval=approve)
    reply = agent.input("save a note: buy milk")
    assert asked and asked[0]["tool"] == "save_note"
    assert "note saved: buy milk" in reply
    assert agent.transport == "relay"


def test_with_two_workers_only_the_announcer_holds_the_relay_link(project: Path, tmp_path: Path, shared_relay):
    relay = shared_relay
    with _host(relay, project, tmp_path, None, "--workers", "2") as host:
        states: dict[int, str] = {}
        deadline = time.monotonic() + 30
        while len(states) < 2 or states.get(0) != "connected":
            assert time.monotonic() < deadline, (states, host.log.read_text())
            body = httpx.get(host.url + "/health", headers={"Connection": "close"}).json()
            states[body["worker"]] = body["relay"]
        assert states == {0: "connected", 1: "on worker 0"}
        reply = _our_client(host.address, relay.base).input("calculate (2+3)*7")
        assert "35" in reply
        assert host.log.read_text().count("✓ relay") == 1  # one link, not one per worker


def test_uploads_work_through_the_relay_like_direct(hosted):
    """Issue 7 parity: a PNG reaches the agent, a file is saved and read, a limit is an ERROR frame."""

    from nacl.signing import SigningKey

    from hosting.client import RemoteAgentError, connect
    from tests.support.uploads import PDF, data_url, png
    from trust.identity import AgentIdentity

    relay, address = hosted
    agent = connect(address, relay_url=relay.base, keys=AgentIdentity.from_signing_key(SigningKey.generate()))
    assert "a 3x2 PNG" in agent.input("what is this?", images=[data_url("image/png", png(3, 2))])
    assert agent.transport == "relay"
    reply = agent.input("read the file", files=[{"name": "r.pdf", "data": data_url("application/pdf", PDF)}])
    assert "Quarterly revenue grew nicely" in reply
    too_many = [{"name": f"{i}.txt", "data": data_url("text/plain", b"x")} for i in range(11)]
    with pytest.raises(RemoteAgentError, match=r"Too many files: 11 \(max: 10\)"):
        agent.input("hi", files=too_many)


async def test_a_relayed_repeat_of_a_signed_connect_reveals_nothing(hosted):
    """Issue 15.1 at the relay door (D20 amended): a second client — or the relay itself — resending the signer's
    captured CONNECT with its session id, or as ATTACH, gets nothing of that session until a signed command."""
    from nacl.signing import SigningKey

    from tests.support.ws import WS
    from trust.signing import sign_command, sign_payload

    relay, address = hosted
    key = SigningKey.generate()
    frame = {
        "type": "CONNECT",
        "to": address,
        **sign_payload(key, {"to": address, "timestamp": int(time.time()), "signed_commands": 1}),
    }
    owner = await WS.open(relay.base + "/ws/input")
    await owner.send(frame)
    await owner.until("AGENT_PROFILE", timeout=30)
    await owner.send(sign_command(key, {"type": "INPUT", "prompt": "my name is Zebediah"}, to=address))
    sid = (await owner.until("OUTPUT", timeout=60))[-1]["session_id"]
    thieves = []
    for kind in ("CONNECT", "ATTACH"):
        thief = await WS.open(relay.base + "/ws/input")
        await thief.send({**frame, "type": kind, "session_id": sid, "last_msg_id": "0"})
        connected = await thief.recv(timeout=30)
        assert connected["type"] == "CONNECTED" and connected["status"] in ("new", "expired"), connected
        assert not {"session", "server_newer", "chat_items", "result"} & set(connected), connected
        thieves.append(thief)
    await owner.send(sign_command(key, {"type": "INPUT", "prompt": "what is my name"}, to=address))
    output = (await owner.until("OUTPUT", timeout=60))[-1]
    assert "Zebediah" in output["result"]
    for thief in thieves:
        seen = thief.seen + await thief.nothing_for(1.0)
        assert "Zebediah" not in json.dumps(seen), seen
        assert not [f for f in seen if f.get("type") in ("OUTPUT", "user_message")], seen
        await thief.close()
    await owner.close()
