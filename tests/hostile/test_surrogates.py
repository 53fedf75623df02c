"""Issue 15 follow-up (15.8 everywhere): a lone surrogate (``"\\ud800"`` in the JSON text) in any string field
of any body or frame is refused by the one decoder, naming the field, at HTTP and /ws (the relay's doors:
``tests/hosting/relay/test_relay_surrogates.py``). It never reaches the agent, the store, the replay log or a send:
nothing is recorded, the JSONL parses, and the same socket runs its next turn."""

from __future__ import annotations

import httpx
import pytest

from tests.hostile.conftest import Snapshot, assert_clean_body
from tests.hostile.test_ws_catalogue import still_works
from tests.support.ws import WS

LONE = '"a\\ud800"'  # the JSON escape: no UTF-8 form once parsed


def lone(template: str) -> str:
    """``template`` with each ``@`` replaced by a JSON string holding a lone surrogate."""
    return template.replace("@", LONE)


HTTP_BODIES = [
    ("input_id", lone('{"prompt": "hi", "input_id": @}'), "input_id is not valid Unicode"),
    (
        "file name",
        lone('{"prompt": "hi", "files": [{"name": @, "data": "data:text/plain;base64,aGk="}]}'),
        "files[0].name is not valid Unicode",
    ),
    ("unknown field", lone('{"prompt": "hi", "note": @}'), "note is not valid Unicode"),
    ("a key", lone('{"prompt": "hi", @: 1}'), "a key is not valid Unicode"),
    ("session key", lone('{"prompt": "hi", "session": {@: 1}}'), "session key is not valid Unicode"),
    ("prompt", lone('{"prompt": @}'), "prompt is not valid Unicode"),
    (
        "signed payload",
        lone('{"payload": {"prompt": @, "to": "0x00", "timestamp": 1}, "from": "0x00", "signature": "00"}'),
        "payload.prompt is not valid Unicode",
    ),
]


@pytest.mark.parametrize(("body", "message"), [pytest.param(*row[1:], id=row[0]) for row in HTTP_BODIES])
def test_http_refuses_a_lone_surrogate_in_any_field(ws_host, body, message):
    snap = Snapshot(ws_host)
    r = httpx.post(ws_host.url + "/input", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert_clean_body(r)
    assert (r.status_code, r.json()) == (400, {"error": message})
    snap.assert_nothing_recorded()
    snap.assert_healthy()


WS_FRAMES = [
    ("INPUT input_id", lone('{"type": "INPUT", "prompt": "hi", "input_id": @}'), "input_id is not valid Unicode"),
    (
        "INPUT file name",
        lone('{"type": "INPUT", "prompt": "hi", "files": [{"name": @, "data": "data:text/plain;base64,aGk="}]}'),
        "files[0].name is not valid Unicode",
    ),
    ("custom field", lone('{"type": "INPUT", "prompt": "hi", "extra": {"x": [@]}}'), "extra.x[0] is not valid Unicode"),
    ("ASK_USER_RESPONSE", lone('{"type": "ASK_USER_RESPONSE", "answer": @}'), "answer is not valid Unicode"),
    ("type", lone('{"type": @}'), "type is not valid Unicode"),
]


@pytest.mark.parametrize(("frame", "message"), [pytest.param(*row[1:], id=row[0]) for row in WS_FRAMES])
async def test_ws_refuses_a_lone_surrogate_in_any_field(ws_host, frame, message):
    snap = Snapshot(ws_host)
    async with await WS.open(ws_host.ws_url) as ws:
        await ws.send({"type": "CONNECT"})
        await ws.until("AGENT_PROFILE")
        await ws.send(frame)
        error = await ws.recv()
        assert (error["type"], error["message"]) == ("ERROR", message)
        snap.assert_nothing_recorded()
        await still_works(ws)
    snap.assert_healthy()


async def test_ws_refuses_a_lone_surrogate_in_the_handshake(ws_host):
    async with await WS.open(ws_host.ws_url) as ws:
        await ws.send(lone('{"type": "CONNECT", "session_id": @}'))
        error = await ws.recv()
        assert (error["type"], error["message"]) == ("ERROR", "session_id is not valid Unicode")
        await ws.send({"type": "CONNECT"})
        await ws.until("AGENT_PROFILE")
        await still_works(ws)
