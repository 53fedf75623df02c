"""``hosting.client``: lookup (PROTOCOL §8.3), direct first, relay fallback, signed and unsigned turns,
ask_user / approval callbacks and multi-turn sessions."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from hosting.client import AgentNotConnected, AnswerRequired, aconnect, connect, sort_endpoints
from trust.signing import verify_command, verify_envelope

from .conftest import AsgiServer, new_identity, wait_until


class ScriptedConversation:
    """The agent side of a turn, as the protocol describes it; checks signatures when frames are signed.

    Prompts: ``ask`` → ``ask_user`` (id q1) then OUTPUT ``hello <answer>``; ``approve`` →
    ``approval_needed`` (id a1) then OUTPUT ``approved=<bool>``; anything else → OUTPUT echoing it.
    """

    log: list[dict[str, Any]] = []
    seals: list[dict[str, Any]] = []

    def __init__(self, send, *, transport: str = "relay", address: str) -> None:
        self.send = send
        self.transport = transport
        self.address = address
        self.session_id: str | None = None
        self.turn = 0
        self.signer: str | None = None

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "SEAL":  # a host that cannot seal answers at once (PROTOCOL §4.8); tests/hosting/conversation seals
            self.seals.append({"transport": self.transport, **frame})
            await self.send({"type": "ERROR", "message": "unknown message type: 'SEAL'"})
            return
        self.log.append({"transport": self.transport, **frame})
        if kind == "PONG":
            return
        if kind == "CONNECT":
            if "signature" in frame:
                verified = verify_envelope(frame, our_address=self.address, require_to=True)
                assert verified.payload["signed_commands"] == 1
                self.signer = verified.signer
            self.session_id = frame.get("session_id") or str(uuid.uuid4())
            self.turn = (frame.get("session") or {}).get("turn", 0)
            await self.send({"type": "CONNECTED", "session_id": self.session_id, "status": "new"})
            await self.send({"type": "PING"})
            return
        payload = frame
        if self.signer is not None:
            payload = verify_command(frame, owner=self.signer, our_address=self.address).payload
        if kind == "INPUT":
            prompt = payload["prompt"]
            if prompt == "ask":
                await self.send(
                    {
                        "type": "ask_user",
                        "id": "q1",
                        "question": "name?",
                        "options": None,
                        "multi_select": False,
                        "session_id": self.session_id,
                    }
                )
            elif prompt == "approve":
                await self.send(
                    {
                        "type": "approval_needed",
                        "id": "a1",
                        "tool": "rm",
                        "arguments": {},
                        "session_id": self.session_id,
                    }
                )
            else:
                await self.finish(f"{prompt} (images={len(payload.get('images') or [])})")
        elif kind == "ASK_USER_RESPONSE":
            assert payload["request_id"] == "q1"
            await self.finish(f"hello {payload['answer']}")
        elif kind == "APPROVAL_RESPONSE":
            assert payload["request_id"] == "a1"
            await self.finish(f"approved={payload['approved']}")

    async def finish(self, result: str) -> None:
        self.turn += 1
        await self.send(
            {
                "type": "OUTPUT",
                "result": result,
                "session_id": self.session_id,
                "session": {"session_id": self.session_id, "turn": self.turn},
            }
        )

    async def close(self) -> None:
        return None


def scripted(address: str):
    def factory(send, *, transport: str = "relay"):
        return ScriptedConversation(send, transport=transport, address=address)

    return factory


def direct_host(address: str):
    """A minimal stand-in host for the direct path: ``GET /info`` and ``/ws`` with the scripted conversation."""
    factory = scripted(address)

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await receive()
            found = scope["path"] == "/info"
            body = json.dumps({"address": address} if found else {"error": "not found"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200 if found else 404,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})

        async def reply(frame):
            await send({"type": "websocket.send", "text": json.dumps(frame)})

        conversation = factory(reply, transport="direct")
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await conversation.handle(json.loads(message["text"]))

    return app


@pytest.fixture(autouse=True)
def clear_log():
    ScriptedConversation.log = []
    ScriptedConversation.seals = []


@pytest.fixture
async def agent_on_relay(relay, link_factory):
    identity = new_identity()
    link = await link_factory(relay.base, identity=identity, conversation_factory=scripted(identity.address))
    return identity, link


async def test_an_address_is_reached_through_the_relay_when_it_has_no_endpoints(relay, agent_on_relay):
    identity, _ = agent_on_relay
    agent = await aconnect(identity.address, relay_url=relay.base)
    assert await agent.ainput("hello") == "hello (images=0)"
    assert agent.transport == "relay"
    connect_frame = ScriptedConversation.log[0]
    assert connect_frame["type"] == "CONNECT" and connect_frame["to"] == identity.address
    assert "signature" not in connect_frame  # keys=None: anonymous


async def test_two_inputs_continue_one_session(relay, agent_on_relay):
    identity, _ = agent_on_relay
    agent = await aconnect(identity.address, relay_url=relay.base)
    await agent.ainput("one")
    first_session = agent.session_id
    await agent.ainput("two")
    assert agent.session_id == first_session
    assert agent.session == {"session_id": first_session, "turn": 2}
    second_connect = [f for f in ScriptedConversation.log if f["type"] == "CONNECT"][1]
    assert second_connect["session_id"] == first_session and second_connect["session"]["turn"] == 1


async def test_with_keys_the_handshake_and_commands_are_signed(relay, agent_on_relay):
    identity, _ = agent_on_relay
    me = new_identity()
    agent = await aconnect(identity.address, relay_url=relay.base, keys=me, on_ask_user=lambda event: "Ada")
    assert await agent.ainput("ask") == "hello Ada"
    kinds = {f["type"]: f for f in ScriptedConversation.log}
    assert kinds["CONNECT"]["from"] == me.address
    assert kinds["INPUT"]["payload"]["nonce"] and kinds["INPUT"]["payload"]["to"] == identity.address
    assert kinds["ASK_USER_RESPONSE"]["payload"]["request_id"] == "q1"


async def test_approvals_go_to_the_callback_and_default_to_refusal(relay, agent_on_relay):
    identity, _ = agent_on_relay
    yes = await aconnect(identity.address, relay_url=relay.base, on_approval=lambda event: event["tool"] == "rm")
    assert await yes.ainput("approve") == "approved=True"

    async def no(event):
        return False

    assert await (await aconnect(identity.address, relay_url=relay.base, on_approval=no)).ainput("approve") == (
        "approved=False"
    )
    assert await (await aconnect(identity.address, relay_url=relay.base)).ainput("approve") == "approved=False"


async def test_ask_user_without_a_callback_raises(relay, agent_on_relay):
    identity, _ = agent_on_relay
    agent = await aconnect(identity.address, relay_url=relay.base)
    with pytest.raises(AnswerRequired, match="name"):
        await agent.ainput("ask")


async def test_an_unknown_agent_raises_agent_not_connected(relay):
    agent = await aconnect("0x" + "ab" * 32, relay_url=relay.base)
    with pytest.raises(AgentNotConnected):
        await agent.ainput("hi", timeout=5)


async def announced_with(relay, link_factory, identity, endpoints, keys=None):
    """Announce ``identity``'s scripted agent on ``relay`` with these direct ``endpoints``; a client for it."""
    await link_factory(
        relay.base, identity=identity, conversation_factory=scripted(identity.address), endpoints=endpoints
    )
    return await aconnect(identity.address, relay_url=relay.base, keys=keys)


async def test_announced_direct_endpoints_are_tried_first(relay, link_factory):
    identity = new_identity()
    host = await AsgiServer(direct_host(identity.address)).start()
    try:
        agent = await announced_with(
            relay,
            link_factory,
            identity,
            [f"http://127.0.0.1:{host.port}", f"ws://127.0.0.1:{host.port}/ws"],
            keys=new_identity(),
        )
        assert await agent.ainput("hi", images=["data:image/png;base64,AAAA"]) == "hi (images=1)"
        assert agent.transport == "direct"
        assert ScriptedConversation.log[0]["transport"] == "direct"
        assert "to" not in ScriptedConversation.log[0]  # top-level `to` only on relay sockets
    finally:
        await host.stop()


async def test_a_direct_endpoint_that_went_away_falls_back_to_the_relay(relay, link_factory):
    identity = new_identity()
    host = await AsgiServer(direct_host(identity.address)).start()
    agent = await announced_with(relay, link_factory, identity, [f"http://127.0.0.1:{host.port}"])
    assert await agent.ainput("one") == "one (images=0)"
    assert agent.transport == "direct"
    await host.stop()  # resolved and cached, then gone
    assert await agent.ainput("two") == "two (images=0)"
    assert agent.transport == "relay"
    assert agent.session["turn"] == 2  # the conversation went on over the other path


async def test_an_endpoint_whose_info_names_another_agent_is_not_used(relay, link_factory):
    identity = new_identity()
    impostor = await AsgiServer(direct_host(new_identity().address)).start()
    try:
        agent = await announced_with(relay, link_factory, identity, [f"http://127.0.0.1:{impostor.port}"])
        assert await agent.ainput("hi") == "hi (images=0)"
        assert agent.transport == "relay"
    finally:
        await impostor.stop()


async def test_signed_clients_drop_a_plaintext_lan_endpoint_that_cannot_seal(relay, link_factory):
    """127.0.0.2 is not a name the released client (or ours) treats as loopback: a host there that cannot seal
    gets our SEAL, answers ERROR, and the turn goes through the relay (PROTOCOL §8.3 step 5)."""
    identity = new_identity()
    host = await AsgiServer(direct_host(identity.address), bind="127.0.0.2").start()
    try:
        agent = await announced_with(
            relay,
            link_factory,
            identity,
            [f"http://127.0.0.2:{host.port}", f"ws://127.0.0.2:{host.port}/ws"],
            keys=new_identity(),
        )
        assert await agent.ainput("hi") == "hi (images=0)"
        assert agent.transport == "relay" and not agent.sealed
        assert [f["transport"] for f in ScriptedConversation.seals] == ["direct", "relay"]
        assert [f["transport"] for f in ScriptedConversation.log if f["type"] == "CONNECT"] == ["relay"]
    finally:
        await host.stop()


async def test_the_handshake_carries_a_nonce(relay, agent_on_relay):
    identity, _ = agent_on_relay
    agent = await aconnect(identity.address, relay_url=relay.base, keys=new_identity())
    await agent.ainput("one")
    await agent.ainput("two")
    nonces = [f["payload"]["nonce"] for f in ScriptedConversation.log if f["type"] == "CONNECT"]
    assert len(set(nonces)) == 2 and all(nonces)


async def test_a_url_target_talks_directly():
    address = new_identity().address
    host = await AsgiServer(direct_host(address)).start()
    try:
        agent = await aconnect(host.http, keys=new_identity())
        assert await agent.ainput("hi") == "hi (images=0)"
        assert agent.address == address  # learned from /info to sign `to`
    finally:
        await host.stop()


async def test_the_blocking_client_refuses_to_run_inside_a_loop():
    with pytest.raises(RuntimeError, match="ainput"):
        connect("http://127.0.0.1:9").input("hi")


def test_the_blocking_client_runs_a_turn(tmp_path):
    address = new_identity().address

    async def serve_and_wait(ready, done):
        host = await AsgiServer(direct_host(address)).start()
        ready.append(host.http)
        await wait_until(lambda: done, timeout=30, what="the client")
        await host.stop()

    import threading

    ready: list[str] = []
    done: list[bool] = []
    thread = threading.Thread(target=lambda: asyncio.run(serve_and_wait(ready, done)))
    thread.start()
    try:
        while not ready:
            thread.join(0.02)
        agent = connect(ready[0])
        assert agent.input("one") == "one (images=0)"
        assert agent.input("two") == "two (images=0)"
        assert agent.session["turn"] == 2
    finally:
        done.append(True)
        thread.join(10)


def test_endpoints_are_ordered_loopback_private_public_with_tls_first():
    ordered = sort_endpoints(
        [
            "http://8.8.8.8:1",
            "https://example.com",
            "http://192.168.1.2:1",
            "http://10.1.2.3:1",
            "http://localhost:1",
            "https://127.0.0.1:1",
            "http://172.20.0.1:1",
        ]
    )
    assert ordered == [
        "https://127.0.0.1:1",
        "http://localhost:1",
        "http://192.168.1.2:1",
        "http://10.1.2.3:1",
        "http://172.20.0.1:1",
        "https://example.com",
        "http://8.8.8.8:1",
    ]


async def test_our_client_skips_a_frame_nested_100000_deep_from_a_hostile_peer():
    """Issue 15.7 at our client: a peer's frame no parser can nest is skipped (not a RecursionError)."""
    from websockets.asyncio.server import serve

    deep = '{"type": "EVENT", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    dupe = '{"type": "OUTPUT", "result": "forged", "result": "twice"}'

    async def peer(ws):
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("type") in ("CONNECT", "INIT"):
                await ws.send(deep)
                await ws.send(json.dumps({"type": "CONNECTED", "session_id": "s", "status": "new"}))
            elif frame.get("type") == "INPUT":
                await ws.send(deep)
                await ws.send(dupe)
                await ws.send(json.dumps({"type": "OUTPUT", "result": "ok", "session_id": "s"}))

    async with serve(peer, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        agent = await aconnect(f"ws://127.0.0.1:{port}", timeout=20)
        assert await agent.ainput("hi") == "ok"
