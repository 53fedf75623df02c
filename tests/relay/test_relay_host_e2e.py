"""End to end through our relay: the released 1.9.2 client and our client ↔ ``manage.py runrelay`` ↔
``manage.py runhost --relay-url`` with the demo agent (PROTOCOL §10 items 110-113). Unless a test says
otherwise the host announces no direct endpoints, so every turn goes through the relay.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import REPO, free_port

pytestmark = [pytest.mark.slow]


def _env(project: Path, machine: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNECTONION_", "OPENONION_", "AGENT_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(PYTHONPATH=str(REPO), AGENT_CONFIG_PATH=str(machine), HOME=str(machine.parent))
    return env


def _wait_listed(relay_http: str, address: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            reply = httpx.get(f"{relay_http}/api/agents/{address}", timeout=2)
            if reply.status_code == 200:
                return reply.json()
        time.sleep(0.1)
    raise AssertionError(f"{address} was not listed on the relay within {timeout} s")


@contextlib.contextmanager
def _process(cmd: list[str], cwd: Path, env: dict[str, str], log: Path):
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / ".co").mkdir(parents=True)
    # No direct endpoints: the released client must go through the relay (§10 item 110).
    (folder / ".co" / "host.yaml").write_text("announce_loopback: false\n")
    return folder


class Hosted:
    """A running ``runhost --relay-url`` process and the relay it announces on."""

    def __init__(self, relay, address: str, port: int, log: Path) -> None:
        self.relay, self.address, self.port, self.log = relay, address, port, log

    def health(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).json()

    def wait_relay_state(self, wanted: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                body = self.health()
                if str(body.get("relay", "")).startswith(wanted):
                    return body
            time.sleep(0.05)
        raise AssertionError(f"/health relay never became {wanted!r} (last {body}):\n{self.log.read_text()}")


@contextlib.contextmanager
def _host(relay, project: Path, tmp_path: Path, extra_env: dict[str, str] | None = None, *args: str):
    port = free_port()
    cmd = [sys.executable, str(REPO / "manage.py"), "runhost", "--port", str(port), "--relay-url", relay.base,
           *args]
    log = tmp_path / "host.log"
    env = _env(project, tmp_path / "machine")
    env.update(extra_env or {})
    with _process(cmd, project, env, log):
        deadline = time.monotonic() + 40
        address = None
        while time.monotonic() < deadline and address is None:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                address = httpx.get(f"http://127.0.0.1:{port}/info", timeout=1).json().get("address")
            time.sleep(0.1)
        assert address, log.read_text()
        _wait_listed(relay.http, address)
        yield Hosted(relay, address, port, log)


@pytest.fixture
def hosted(project: Path, tmp_path: Path, relay_process):
    """Our relay process plus ``runhost --relay-url <relay>`` with the demo agent; yields (relay, address)."""
    relay = relay_process()
    with _host(relay, project, tmp_path) as host:
        assert _wait_listed(relay.http, host.address)["endpoints"] == []
        yield relay, host.address


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


def test_announce_command_serves_the_real_conversation(project: Path, tmp_path: Path, relay_process):
    from connectonion import connect

    relay = relay_process()
    cmd = [sys.executable, str(REPO / "manage.py"), "announce", "--relay-url", relay.base, "--no-endpoints"]
    log = tmp_path / "announce.log"
    env = _env(project, tmp_path / "machine")
    env["CONNECTONION_HOST_ARGS"] = json.dumps({"project_dir": str(project)})
    with _process(cmd, project, env, log):
        deadline = time.monotonic() + 40
        found = None
        while time.monotonic() < deadline and found is None:
            found = re.search(r"0x[0-9a-f]{64}", log.read_text())
            time.sleep(0.1)
        assert found, log.read_text()
        _wait_listed(relay.http, found.group(0))
        reply = connect(found.group(0), relay_url=relay.base, keys=False).input(
            "calculate (2+3)*7", timeout=60
        )
        assert "35" in reply.text


def _our_client(address: str, relay_base: str, **options):
    from nacl.signing import SigningKey

    from hosting.client import connect
    from trust.identity import AgentIdentity

    return connect(address, relay_url=relay_base,
                   keys=AgentIdentity.from_signing_key(SigningKey.generate()), **options)


def test_banner_health_and_log_follow_the_relay_link(project: Path, tmp_path: Path, relay_process):
    relay = relay_process()
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
        _wait_listed(again.http, host.address, timeout=40)
        host.wait_relay_state("connected")
        reply = _our_client(host.address, again.base).input("calculate (2+3)*7")
        assert "35" in reply
        assert host.log.read_text().count("✓ relay") == 1  # the outage is the link's line, not another ✓


def test_our_client_prefers_the_announced_direct_endpoint(project: Path, tmp_path: Path, relay_process):
    (project / ".co" / "host.yaml").write_text("announce_loopback: true\n")
    relay = relay_process()
    with _host(relay, project, tmp_path) as host:
        assert _wait_listed(relay.http, host.address)["endpoints"]
        agent = _our_client(host.address, relay.base)
        assert "hola" in agent.input("translate hello to spanish").lower()
        assert agent.transport == "direct"


def test_our_client_falls_back_to_the_relay_when_the_endpoint_is_unreachable(
    project: Path, tmp_path: Path, relay_process
):
    dead = free_port()  # announced, but nothing listens there
    relay = relay_process()
    with _host(relay, project, tmp_path, {"AGENT_PUBLIC_DOMAIN": f"127.0.0.1:{dead}"}) as host:
        assert _wait_listed(relay.http, host.address)["endpoints"] == [
            f"https://127.0.0.1:{dead}", f"wss://127.0.0.1:{dead}/ws"
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


def test_with_two_workers_only_the_announcer_holds_the_relay_link(project: Path, tmp_path: Path, relay_process):
    relay = relay_process()
    with _host(relay, project, tmp_path, None, "--workers", "2") as host:
        states: dict[int, str] = {}
        deadline = time.monotonic() + 30
        while len(states) < 2 or states.get(0) != "connected":
            assert time.monotonic() < deadline, (states, host.log.read_text())
            body = httpx.get(f"http://127.0.0.1:{host.port}/health", headers={"Connection": "close"}).json()
            states[body["worker"]] = body["relay"]
        assert states == {0: "connected", 1: "on worker 0"}
        reply = _our_client(host.address, relay.base).input("calculate (2+3)*7")
        assert "35" in reply
        assert host.log.read_text().count("✓ relay") == 1  # one link, not one per worker


def test_uploads_work_through_the_relay_like_direct(hosted):
    """Issue 7 parity: a PNG reaches the agent, a file is saved and read, a limit is an ERROR frame."""
    import base64

    from nacl.signing import SigningKey

    from hosting.client import RemoteAgentError, connect
    from tests.uploads.test_uploads_e2e import PDF, data_url, png
    from trust.identity import AgentIdentity

    relay, address = hosted
    agent = connect(address, relay_url=relay.base, keys=AgentIdentity.from_signing_key(SigningKey.generate()))
    assert "a 3x2 PNG" in agent.input("what is this?", images=[data_url("image/png", png(3, 2))])
    assert agent.transport == "relay"
    reply = agent.input("read the file", files=[{"name": "r.pdf", "data": data_url("application/pdf", PDF)}])
    assert "Quarterly revenue grew nicely" in reply
    too_many = [{"name": f"{i}.txt", "data": "data:text/plain;base64," + base64.b64encode(b"x").decode()}
                for i in range(11)]
    with pytest.raises(RemoteAgentError, match=r"Too many files: 11 \(max: 10\)"):
        agent.input("hi", files=too_many)


async def test_a_relayed_repeat_of_a_signed_connect_reveals_nothing(hosted):
    """Issue 15.1 at the relay door (D20 amended): a second client — or the relay itself — resending the signer's
    captured CONNECT with its session id, or as ATTACH, gets nothing of that session until a signed command."""
    from nacl.signing import SigningKey

    from tests.ws.conftest import WS
    from trust.signing import sign_command, sign_payload

    relay, address = hosted
    key = SigningKey.generate()
    frame = {"type": "CONNECT", "to": address,
             **sign_payload(key, {"to": address, "timestamp": int(time.time()), "signed_commands": 1})}
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
