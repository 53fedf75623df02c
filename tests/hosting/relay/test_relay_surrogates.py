"""Issue 15 follow-up (15.8 at the relay's doors): a lone surrogate in a relayed frame is refused by the
decoder of /ws, naming the field, on both sides (our relay server and the agent's relay link). It is never
forwarded (the relay could not send it on), and the socket, the link and every other conversation go on."""

from __future__ import annotations

import json

from .conftest import announced, client_socket, recv_json, send_json, wait_until

LONE = '"a\\ud800"'


def lone(template: str) -> str:
    """``template`` with each ``@`` replaced by a JSON string holding a lone surrogate."""
    return template.replace("@", LONE)


async def test_our_relay_refuses_a_lone_surrogate_from_either_side(relay, identity):
    agent = await announced(relay, identity)
    to = identity.address
    async with client_socket(relay) as client:
        await client.send(lone('{"type": "CONNECT", "to": @}'))  # before the socket is bound
        refused = await recv_json(client)
        assert (refused["type"], refused["error"]) == ("ERROR", "to is not valid Unicode")
        await send_json(client, {"type": "CONNECT", "to": to})
        conn_id = (await recv_json(agent))["conn_id"]
        await client.send(lone('{"type": "INPUT", "prompt": @}'))
        refused = await recv_json(client)
        assert (refused["message"], refused["error"]) == ("prompt is not valid Unicode",) * 2
        await agent.send(lone('{"type": "OUTPUT", "conn_id": "' + conn_id + '", "result": @}'))
        assert (await recv_json(agent))["error"] == "result is not valid Unicode"  # to the agent only
        await send_json(client, {"type": "INPUT", "prompt": "after"})
        assert (await recv_json(agent))["prompt"] == "after"
        await send_json(agent, {"type": "OUTPUT", "conn_id": conn_id, "session_id": "s", "result": "ok"})
        assert (await recv_json(client))["result"] == "ok"
    await agent.close()


async def test_the_link_refuses_a_lone_surrogate_and_keeps_its_conversations(scripted_relay, link_factory):
    scripted = await scripted_relay(reply_announce={"type": "ANNOUNCE_OK"})
    link = await link_factory(scripted.base)
    ws = scripted.sockets[0]
    await ws.send(lone('{"conn_id": "c1", "session_id": "s1", "type": "INPUT", "prompt": @}'))
    await ws.send(lone('{"conn_id": @, "type": "INPUT", "prompt": "spoof"}'))  # an unsendable tag: dropped
    await ws.send(json.dumps({"type": "INPUT", "conn_id": "c2", "session_id": "s2", "prompt": "hi"}))
    await wait_until(lambda: scripted.frames("OUTPUT"), what="c2's OUTPUT")
    assert [f["result"] for f in scripted.frames("OUTPUT")] == ["hi"]
    errors = {f.get("conn_id"): f["message"] for f in scripted.frames("ERROR")}
    assert errors == {"c1": "prompt is not valid Unicode"}
    assert len(scripted.connections) == 1 and link.state == "connected"
    assert link.conversations == 1
