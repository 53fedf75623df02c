"""The agent's relay link (PROTOCOL §8.1, HARDENING R1-R4, R7) against our relay and scripted relays."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from common.errors import PromptRequired
from hosting.relay import wire
from hosting.relay.echo import EchoConversation
from hosting.relay.link import RelayLink

from .conftest import client_socket, new_identity, recv_json, send_json, wait_until

# -- against our relay -------------------------------------------------------------------------------


async def test_the_first_frame_is_a_signed_announce_with_conn_id_support(scripted_relay):
    relay = await scripted_relay()
    identity = new_identity()
    link = RelayLink(
        identity,
        relay_url=wire.announce_url(relay.base),
        conversation_factory=EchoConversation,
        endpoints=["http://localhost:8000", "ws://localhost:8000/ws"],
        summary="I echo",
        profile={"alias": "echo", "tools": []},
    )
    await link.start()
    try:
        await wait_until(lambda: relay.announces, what="an ANNOUNCE")
        first = relay.connections[0][0]
        assert first["type"] == "ANNOUNCE" and first["relay"] == relay.base
        assert first["relay_features"] == ["conn_id"]
        assert first["endpoints"] == ["http://localhost:8000", "ws://localhost:8000/ws"]
        assert wire.verify_announce(first, time.time(), 300)["address"] == identity.address
    finally:
        await link.stop()


async def test_relayed_frames_arrive_tagged_and_replies_go_back_to_their_socket(relay, link_factory):
    link = await link_factory(relay.base)
    address = link.identity.address
    async with (
        client_socket(relay, {"type": "CONNECT", "to": address}) as one,
        client_socket(relay, {"type": "CONNECT", "to": address}) as two,
    ):
        c1, c2 = await recv_json(one), await recv_json(two)
        assert c1["type"] == c2["type"] == "CONNECTED"
        assert c1["conn_id"] != c2["conn_id"] and c1["session_id"] != c2["session_id"]
        await send_json(one, {"type": "PROBE", "n": 1})
        await send_json(two, {"type": "PROBE", "n": 2})
        e1, e2 = await recv_json(one), await recv_json(two)
        # The conversation saw the relay's tags; the reply came back tagged to the right socket.
        assert e1["received"] == {
            "type": "PROBE",
            "n": 1,
            "session_id": c1["session_id"],
            "conn_id": c1["conn_id"],
        }
        assert e2["received"]["n"] == 2 and e2["conn_id"] == c2["conn_id"]
        await send_json(one, {"type": "INPUT", "prompt": "hello", "input_id": "i1"})
        assert await recv_json(one) == {
            "type": "OUTPUT",
            "result": "hello",
            "session_id": c1["session_id"],
            "input_id": "i1",
            "conn_id": c1["conn_id"],
        }
        assert link.conversations == 2


async def test_closing_one_client_ends_only_its_own_conversation(relay, link_factory):
    made: list[EchoConversation] = []

    def factory(send, *, transport="relay"):
        made.append(EchoConversation(send, transport=transport))
        return made[-1]

    link = await link_factory(relay.base, conversation_factory=factory)
    address = link.identity.address
    async with client_socket(relay, {"type": "CONNECT", "to": address}) as two:
        async with client_socket(relay, {"type": "CONNECT", "to": address}) as one:
            await recv_json(one)
            await recv_json(two)
        await wait_until(lambda: link.conversations == 1, what="one conversation to end")
        # (its route is dropped first, then the conversation is closed: wait for that too)
        await wait_until(lambda: any(c.closed for c in made), what="the ended conversation to be closed")
        assert [c.closed for c in made].count(True) == 1
        assert all(c.transport == "relay" for c in made)
        await send_json(two, {"type": "INPUT", "prompt": "still here"})
        assert (await recv_json(two))["result"] == "still here"


async def test_an_idle_conversation_ends_after_the_idle_timeout(relay, link_factory):
    link = await link_factory(relay.base, idle_timeout=0.3)
    async with client_socket(relay, {"type": "CONNECT", "to": link.identity.address}) as client:
        await recv_json(client)
        await wait_until(lambda: link.conversations == 0, what="the idle conversation to end")


async def test_the_conversation_cap_refuses_with_too_many_conversations(relay, link_factory):
    link = await link_factory(relay.base, max_conversations=2)
    address = link.identity.address
    async with (
        client_socket(relay, {"type": "CONNECT", "to": address}) as a,
        client_socket(relay, {"type": "CONNECT", "to": address}) as b,
        client_socket(relay, {"type": "CONNECT", "to": address}) as c,
    ):
        await recv_json(a)
        await recv_json(b)
        refusal = await recv_json(c)
        assert refusal["type"] == "ERROR" and refusal["message"] == "too many conversations"
        assert refusal["conn_id"]
        assert link.conversations == 2


async def test_the_heartbeat_reannounces_while_traffic_flows(relay, link_factory, scripted_relay):
    scripted = await scripted_relay()
    link = await link_factory(scripted.base, heartbeat_interval=0.3)
    sock = scripted.sockets[0]
    for n in range(12):  # client traffic never stops the heartbeat (D10)
        await sock.send(json.dumps({"type": "INPUT", "prompt": str(n), "conn_id": "c", "session_id": "s"}))
        await asyncio.sleep(0.1)
    await wait_until(lambda: len(scripted.announces) >= 4, what="heartbeat ANNOUNCEs")
    stamps = [a["timestamp"] for a in scripted.announces]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # fresh, never a re-sent one
    signatures = {a["signature"] for a in scripted.announces}
    assert len(signatures) == len(stamps)
    assert link.state == "connected"


async def test_a_relay_restart_is_followed_by_reconnect_and_reannounce(relay_process, link_factory):
    process = relay_process()
    link = await link_factory(process.base)
    process.stop()
    await wait_until(lambda: link.state == "unreachable", what="the link to notice")
    process = relay_process(port=process.port)
    await wait_until(lambda: link.state == "connected", timeout=10, what="the link to reconnect")
    async with client_socket(process.base, {"type": "CONNECT", "to": link.identity.address}) as client:
        assert (await recv_json(client))["type"] == "CONNECTED"


# -- against scripted relays (the relay misbehaving) --------------------------------------------------


async def test_relay_errors_are_logged_and_never_cause_a_tight_loop(scripted_relay, link_factory, caplog):
    scripted = await scripted_relay(reply_announce={"type": "ERROR", "error": "Invalid signature"})
    caplog.set_level(logging.ERROR, logger="connectonion.relay")
    link = await link_factory(scripted.base, wait=False, heartbeat_interval=0.5)
    await wait_until(lambda: link.state.startswith("refused: "), what="the refusal to show")
    await asyncio.sleep(1.2)
    assert len(scripted.connections) == 1  # no reconnect storm
    assert len(scripted.announces) <= 1 + 1.2 / 0.5 + 1  # one per heartbeat interval at most
    assert "Relay error: Invalid signature" in caplog.text


async def test_garbage_from_the_relay_is_logged_and_ignored(scripted_relay, link_factory, caplog):
    async def garbage(ws):
        await ws.send("not json")
        await ws.send(b"\x00\xff binary")
        await ws.send("[1, 2, 3]")
        await ws.send(json.dumps({"type": "ERROR", "error": "x"}))
        await ws.send(json.dumps({"type": "SOMETHING"}))  # untagged and not INPUT: dropped
        await ws.send(json.dumps({"type": "CONNECT", "conn_id": {"a": 1}}))
        await ws.send(json.dumps({"type": "ANNOUNCE_OK"}))
        await ws.send(json.dumps({"type": "CONNECT", "conn_id": "c1", "session_id": "s1"}))

    caplog.set_level(logging.WARNING, logger="connectonion.relay")
    scripted = await scripted_relay(garbage)
    await link_factory(scripted.base)
    await wait_until(lambda: scripted.frames("CONNECTED"), what="the good frame to be answered")
    assert scripted.frames("CONNECTED")[0]["conn_id"] == "c1"
    assert len(scripted.connections) == 1
    for text in (
        "Invalid JSON: Expecting value",
        "binary",
        "must be a JSON object",
        "Relay error: x",
        "untagged",
        "malformed",
    ):
        assert text in caplog.text


async def test_a_first_frame_the_conversation_rejects_is_answered_tagged(scripted_relay, link_factory):
    class Strict(EchoConversation):
        async def handle(self, frame):
            if frame.get("type") == "APPROVAL_RESPONSE":
                await self.send({"type": "ERROR", "message": "authenticate first (send CONNECT)"})
            else:
                await super().handle(frame)

    async def script(ws):
        await ws.send(json.dumps({"type": "APPROVAL_RESPONSE", "approved": True, "conn_id": "c9", "session_id": "s9"}))

    scripted = await scripted_relay(script)
    await link_factory(scripted.base, conversation_factory=Strict)
    await wait_until(lambda: scripted.frames("ERROR"), what="the ERROR")
    assert scripted.frames("ERROR")[0] == {
        "type": "ERROR",
        "message": "authenticate first (send CONNECT)",
        "conn_id": "c9",
        "session_id": "s9",
    }


async def test_frames_without_conn_id_are_tagged_with_the_first_session_id(scripted_relay, link_factory):
    async def script(ws):
        await ws.send(json.dumps({"type": "CONNECT", "session_id": "relay-s"}))
        await ws.send(json.dumps({"type": "PROBE", "session_id": "relay-s"}))

    class Renaming(EchoConversation):
        async def handle(self, frame):
            await self.send({"type": "REPLY", "session_id": "app-session"})

    scripted = await scripted_relay(script)
    await link_factory(scripted.base, conversation_factory=Renaming)
    await wait_until(lambda: len(scripted.frames("REPLY")) == 2, what="two replies")
    assert {f["session_id"] for f in scripted.frames("REPLY")} == {"relay-s"}
    assert all("conn_id" not in f for f in scripted.frames("REPLY"))


async def test_legacy_untagged_input_is_answered_with_output(scripted_relay, link_factory):
    async def legacy(prompt, input_id):
        if prompt == "":
            raise PromptRequired()
        if prompt == "boom":
            raise RuntimeError("secret detail")
        return prompt.upper()

    async def script(ws):
        for input_id, prompt in (("i1", "hi"), ("i2", ""), ("i3", "boom")):
            await ws.send(json.dumps({"type": "INPUT", "input_id": input_id, "prompt": prompt}))

    scripted = await scripted_relay(script)
    await link_factory(scripted.base, legacy_input=legacy)
    await wait_until(lambda: len(scripted.frames("OUTPUT")) == 3, what="three OUTPUTs")
    outputs = {f["input_id"]: f for f in scripted.frames("OUTPUT")}
    assert outputs["i1"] == {"type": "OUTPUT", "input_id": "i1", "result": "HI", "success": True}
    assert outputs["i2"] == {
        "type": "OUTPUT",
        "input_id": "i2",
        "result": "prompt required",
        "success": False,
    }
    assert outputs["i3"] == {
        "type": "OUTPUT",
        "input_id": "i3",
        "result": "Unable to run agent",
        "success": False,
    }


async def test_ten_thousand_conn_ids_are_capped(scripted_relay, link_factory):
    async def flood(ws):
        for n in range(10_000):
            await ws.send(json.dumps({"type": "CONNECT", "conn_id": f"c{n}", "session_id": f"s{n}"}))

    scripted = await scripted_relay(flood)
    link = await link_factory(scripted.base, max_conversations=256, idle_timeout=60)
    await wait_until(
        lambda: len(scripted.frames("CONNECTED")) + len(scripted.frames("ERROR")) == 10_000,
        timeout=60,
        what="every conn_id to be answered",
    )
    assert len(scripted.frames("CONNECTED")) == 256
    assert {f["message"] for f in scripted.frames("ERROR")} == {"too many conversations"}
    assert link.conversations == 256


async def test_a_frame_larger_than_max_size_closes_with_1009_and_reconnects(scripted_relay, link_factory):
    async def oversize(ws):
        if len(scripted.connections) == 1:
            await ws.send("x" * 200_000)

    scripted = await scripted_relay(oversize)
    link = await link_factory(scripted.base, max_size=100_000)
    await wait_until(lambda: len(scripted.connections) >= 2, what="a reconnect")
    assert link.failures <= 1
    await wait_until(lambda: link.state == "connected", what="the link to be back")


async def test_backoff_grows_and_is_capped_while_the_relay_is_down(scripted_relay, link_factory, caplog):
    caplog.set_level(logging.WARNING, logger="connectonion.relay")
    scripted = await scripted_relay()
    port = scripted.port
    await scripted.stop()
    link = await link_factory(f"ws://127.0.0.1:{port}", wait=False, backoff=(0.05, 0.1, 0.2, 0.4), jitter=0.1)
    await wait_until(lambda: link.failures >= 6, timeout=10, what="six failures")
    assert link.state == "unreachable"
    delays = [link._delay(n) for n in range(1, 8)]
    assert delays[0] == 0.05
    assert all(0.4 <= d <= 0.44 for d in delays[3:])  # capped, plus at most 10% jitter
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "unreachable (5 attempts" in loud[0].getMessage()


async def test_a_disabled_relay_connects_nowhere():
    link = RelayLink(new_identity(), relay_url=None, conversation_factory=EchoConversation)
    await link.start()
    assert link.state == "disabled"
    await link.stop()


@pytest.mark.parametrize("url", ["wss://r", "wss://r/ws/announce"])
def test_both_relay_url_forms_announce_on_the_same_url(url):
    link = RelayLink(new_identity(), relay_url=url, conversation_factory=EchoConversation)
    assert wire.announce_url(link.relay_base) == "wss://r/ws/announce"
    assert link.state == "connecting"


async def test_a_session_id_reused_right_after_close_gets_a_new_conversation(scripted_relay, link_factory):
    async def script(ws):
        await ws.send(json.dumps({"type": "CONNECT", "session_id": "s"}))
        await ws.send(json.dumps({"type": "close", "session_id": "s"}))
        await ws.send(json.dumps({"type": "CONNECT", "session_id": "s"}))
        await ws.send(json.dumps({"type": "INPUT", "prompt": "again", "session_id": "s"}))

    made: list[EchoConversation] = []

    def factory(send, *, transport="relay"):
        made.append(EchoConversation(send, transport=transport))
        return made[-1]

    scripted = await scripted_relay(script)
    link = await link_factory(scripted.base, conversation_factory=factory)
    await wait_until(lambda: scripted.frames("OUTPUT"), what="the second conversation to answer")
    assert scripted.frames("OUTPUT")[0]["result"] == "again"
    await wait_until(lambda: made[0].closed, what="the first conversation to close")
    assert len(made) == 2 and not made[1].closed and link.conversations == 1
