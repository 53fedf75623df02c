"""``hosting.conversation.seal`` against the released client's ``connectonion.network.sealed``, both ways, with no sockets:
the handshake, the nonce layout, the counters, and the frame caps that must hold a sealed maximal frame."""

from __future__ import annotations

import base64
import json

import pytest
from connectonion.network import sealed as released

from common.errors import SealRejected
from hosting.conversation import seal
from hosting.core.config import HostConfig
from hosting.core.jsonwire import dumps
from hosting.management.commands.runrelay import default_message_cap
from hosting.relay.link import RelayLink

from .conftest import new_keys, released_keys


def test_our_client_and_the_released_host_side_make_one_channel():
    me, host = new_keys(), new_keys()
    sent = seal.hello(me, host.address)
    reply, host_channel = released.host_accept(sent.frame, released_keys(host))
    ours = seal.finish(reply, sent)
    wrapped = ours.wrap({"type": "CONNECT", "prompt": "é"})
    assert host_channel.open(wrapped) == {"type": "CONNECT", "prompt": "é"}
    assert json.loads(ours.open(host_channel.seal({"type": "OUTPUT", "result": "ok"}))) == {
        "type": "OUTPUT",
        "result": "ok",
    }


def test_the_released_client_and_our_host_side_make_one_channel():
    me, host = new_keys(), new_keys()
    hello, key = released.client_hello(released_keys(me), host.address)
    reply, ours, sealed_by = seal.accept(hello, host)
    assert sealed_by == me.address
    theirs = released.client_finish(reply, hello, key)
    assert json.loads(ours.open(theirs.seal({"type": "PONG"}))) == {"type": "PONG"}
    assert theirs.open(ours.wrap({"type": "PING"})) == {"type": "PING"}


def test_the_nonce_is_the_direction_tag_then_the_counter_big_endian():
    assert seal.nonce(b"c2h", 1) == b"c2h" + bytes(20) + b"\x01"
    assert seal.nonce(b"h2c", 258) == b"h2c" + bytes(19) + b"\x01\x02"
    assert seal.nonce(b"c2h", 5) == released._nonce(released._CLIENT_TO_HOST, 5)


def test_counters_start_at_one_and_must_rise():
    me, host = new_keys(), new_keys()
    sent = seal.hello(me, host.address)
    reply, host_layer, _ = seal.accept(sent.frame, host)
    client = seal.finish(reply, sent)
    one, two = client.wrap({"type": "PONG"}), client.wrap({"type": "PONG"})
    assert (one["n"], two["n"]) == (1, 2)
    host_layer.open(two)
    with pytest.raises(SealRejected, match="out of order"):
        host_layer.open(one)
    with pytest.raises(SealRejected, match="out of order"):
        host_layer.open({**two, "n": True})
    with pytest.raises(SealRejected, match="does not open"):
        host_layer.open({**two, "n": 3, "c": "not base64!"})


@pytest.mark.parametrize("plain", [0, 1, 1000, 10 * 1024 * 1024])
def test_sealed_size_bounds_the_sealed_frame_of_a_plain_one(plain):
    me, host = new_keys(), new_keys()
    sent = seal.hello(me, host.address)
    reply, _, _ = seal.accept(sent.frame, host)
    layer = seal.finish(reply, sent)
    layer.sent = 10**9  # the largest counters a long socket may reach
    frame = layer.wrap_text("x" * plain)
    text = dumps({**frame, "session_id": "0" * 36, "conn_id": "0" * 36})
    assert len(base64.b64decode(frame["c"])) == plain + 16
    assert len(text) <= seal.sealed_size(plain) + 100


def test_the_relay_link_and_our_relay_hold_a_sealed_maximal_frame():
    config = HostConfig()
    link = RelayLink.from_config(config, new_keys(), conversation_factory=lambda send, **kw: None)
    assert link.max_size >= seal.sealed_size(config.max_request_bytes) + 100
    assert default_message_cap() >= seal.sealed_size(config.max_request_bytes) + 100
