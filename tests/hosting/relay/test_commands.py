"""``manage.py runrelay`` and ``manage.py announce`` as real processes on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys

import httpx
import pytest
import websockets

from tests.support.hosts import MANAGE, ServerProcess, host_env

from .conftest import client_socket, recv_json, send_json, signed_announce, wait_until


async def test_runrelay_serves_lookup_and_expires_a_silent_agent(relay_process, identity):
    relay = relay_process("--agent-ttl", "1")
    async with websockets.connect(relay.base + "/ws/announce") as agent:
        await send_json(agent, signed_announce(identity, relay_base=relay.base))
        assert await recv_json(agent) == {"type": "ANNOUNCE_OK"}
        async with httpx.AsyncClient() as http:
            live = await http.get(f"{relay.http}/api/agents/{identity.address}")
            assert live.status_code == 200 and live.json()["online"] is True

            async def gone():
                return (await http.get(f"{relay.http}/api/agents/{identity.address}")).status_code == 404

            await wait_until(gone, timeout=10, what="the silent agent to expire")
            assert (await http.get(f"{relay.http}/api/agents/{identity.address}")).json() == {
                "error": "agent not found"
            }


async def test_runrelay_carries_messages_larger_than_daphnes_default(relay_process, link_factory):
    relay = relay_process()
    link = await link_factory(relay.base)
    prompt = "x" * (3 * 1024 * 1024)  # daphne's default limit is 1 MiB (PROTOCOL D24)
    async with client_socket(relay.base, {"type": "CONNECT", "to": link.identity.address}) as client:
        assert (await recv_json(client))["type"] == "CONNECTED"
        await send_json(client, {"type": "INPUT", "prompt": prompt})
        assert (await recv_json(client, timeout=20))["result"] == prompt


async def test_announce_command_registers_this_project_and_serves_echo(relay_process, tmp_path):
    relay = relay_process()
    project = tmp_path / "project"
    project.mkdir()
    env = host_env(
        AGENT_CONFIG_PATH=str(tmp_path / "machine"), CONNECTONION_HOST_ARGS=json.dumps({"project_dir": str(project)})
    )
    announcer = ServerProcess()
    announcer.spawn(
        [sys.executable, str(MANAGE), "announce", "--echo", "--relay-url", relay.base + "/ws/announce"],
        cwd=project,
        env=env,
        log_path=tmp_path / "announce.log",
    )
    try:

        def address():
            found = re.search(r"0x[0-9a-f]{64}", (tmp_path / "announce.log").read_text())
            return found.group(0) if found else None

        agent = await wait_until(address, timeout=30, what="the announce command to print its address")
        assert (project / ".co" / "keys" / "agent.key").stat().st_size == 32

        async def listed():
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{relay.http}/api/agents/{agent}")).status_code == 200

        await wait_until(listed, timeout=15, what="the agent to be listed")
        async with client_socket(relay.base, {"type": "INPUT", "to": agent, "prompt": "hi"}) as client:
            assert (await recv_json(client))["type"] == "CONNECTED"
            assert (await recv_json(client))["result"] == "hi"
    finally:
        announcer.stop(signal.SIGINT)


@pytest.fixture
def redis_url(own_redis):
    return own_redis.url


@pytest.mark.redis
async def test_two_relay_processes_share_agents_through_redis(relay_process, redis_url, identity):
    # Two processes behind one public name (D28): both check ANNOUNCEs against that name.
    first = relay_process("--redis-url", redis_url, "--public-url", "wss://relay.example")
    second = relay_process("--redis-url", redis_url, "--public-url", "wss://relay.example")
    async with websockets.connect(first.base + "/ws/announce") as agent:
        await send_json(agent, signed_announce(identity, relay_base="wss://relay.example"))
        assert await recv_json(agent) == {"type": "ANNOUNCE_OK"}
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{second.http}/api/agents/{identity.address}")).status_code == 200
        async with client_socket(second.base, {"type": "CONNECT", "to": identity.address}) as client:
            forwarded = await recv_json(agent)
            assert forwarded["type"] == "CONNECT"
            await send_json(agent, {"type": "CONNECTED", "conn_id": forwarded["conn_id"], "session_id": "s"})
            assert (await recv_json(client))["type"] == "CONNECTED"
        closing = await recv_json(agent)
        assert closing == {
            "type": "close",
            "session_id": forwarded["session_id"],
            "conn_id": forwarded["conn_id"],
        }
    # The first relay drops the agent from the shared registry when it sees the socket close; a CONNECT
    # that reaches the second relay before then is bound to the dead channel, so wait for the drop.
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            if (await http.get(f"{second.http}/api/agents/{identity.address}")).status_code == 404:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the agent stayed registered after its socket closed")
    async with client_socket(second.base, {"type": "CONNECT", "to": identity.address}) as late:
        assert (await recv_json(late))["message"] == "Agent not connected"
