"""The released connectonion 1.9.2 client against our relay and our relay link (echo conversation):
lookup, SEAL fallback, relayed CONNECT/INPUT/OUTPUT, and direct use of announced endpoints."""

from __future__ import annotations

import asyncio

from connectonion import address as co_address
from connectonion import connect

from .conftest import new_identity


async def test_released_client_without_keys_gets_an_answer_through_our_relay(relay, link_factory):
    link = await link_factory(relay.base)
    agent = connect(link.identity.address, relay_url=relay.base, keys=False)
    reply = await asyncio.to_thread(agent.input, "hello through the relay", timeout=20)
    assert reply.text == "hello through the relay" and reply.done


async def test_released_client_with_keys_falls_back_from_seal_and_signs_its_commands(relay, link_factory):
    link = await link_factory(relay.base)
    agent = connect(link.identity.address, relay_url=relay.base, keys=co_address.generate())
    first = await asyncio.to_thread(agent.input, "one", timeout=20)
    second = await asyncio.to_thread(agent.input, "two", timeout=20)
    assert (first.text, second.text) == ("one", "two")


async def test_released_client_ignores_endpoints_whose_info_does_not_match(relay, link_factory):
    identity = new_identity()
    await link_factory(relay.base, identity=identity, endpoints=["http://127.0.0.1:9", "ws://127.0.0.1:9/ws"])
    agent = connect(identity.address, relay_url=relay.base, keys=False)
    reply = await asyncio.to_thread(agent.input, "via relay", timeout=20)
    assert reply.text == "via relay"
