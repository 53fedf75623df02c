"""The released connectonion 1.9.2 client straight against our host (no relay in the path).

The released client reaches a host directly only through its relay lookup: ``GET <relay>/api/agents/<address>``
lists endpoints, it checks each one's ``/info`` address and opens ``ws://…/ws``. A tiny lookup server that
lists our host's URL stands in for the relay; the WebSocket traffic goes to our host alone.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from connectonion import address as co_address
from connectonion import connect


@pytest.fixture(scope="module")
def host(module_hosts):
    return module_hosts(name="released")


@pytest.fixture(scope="module")
def lookup(host):
    endpoints = {"endpoints": [host.url], "online": True}

    class Lookup(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(endpoints).encode()
            self.send_response(200 if self.path.startswith("/api/agents/") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Lookup)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def address(host) -> str:
    return httpx.get(host.url + "/info").json()["address"]


@pytest.mark.parametrize("keys", [False, "generated"])
async def test_two_inputs_continue_one_session(lookup, address, keys):
    agent = connect(address, relay_url=lookup, keys=co_address.generate() if keys else False)
    first = await asyncio.to_thread(agent.input, "my name is Ada", timeout=20)
    second = await asyncio.to_thread(agent.input, "what is my name", timeout=20)  # keys: byte-identical CONNECT (D20)
    assert first.done and second.done
    assert second.text == "Your name is Ada."
    assert agent._session_id == agent.current_session["session_id"]
    assert agent.current_session["turn"] == 2


async def test_on_approval_callback_runs_the_gated_tool(lookup, address):
    asked: list[dict] = []

    def approve(event: dict) -> dict:
        asked.append(event)
        return {"approved": True, "scope": "once"}

    agent = connect(address, relay_url=lookup, keys=False)
    reply = await asyncio.to_thread(agent.input, "save a note: milk", timeout=20, on_approval=approve)
    assert reply.text == "Done: note saved: milk." and asked[0]["tool"] == "save_note"


async def test_a_question_without_callback_is_answered_by_the_next_input(lookup, address):
    agent = connect(address, relay_url=lookup, keys=False)
    question = await asyncio.to_thread(agent.input, "quiz me", timeout=20)
    assert not question.done and "capital of France" in question.text
    verdict = await asyncio.to_thread(agent.input, "Paris", timeout=20)
    assert verdict.done and verdict.text == "Correct!"


@pytest.mark.parametrize("keys", [False, "generated"])
async def test_stop_then_input_continues_the_conversation(lookup, address, keys):
    """D29, test 120c: ``stop()`` ends the running turn with OUTPUT (status cancelled, its session); the client
    keeps that session, so the next ``input()`` is turn 3 of the same conversation and the name is remembered."""
    agent = connect(address, relay_url=lookup, keys=co_address.generate() if keys else False)
    assert (await asyncio.to_thread(agent.input, "my name is Ada", timeout=20)).text == "Nice to meet you, Ada!"
    seen = agent._last_event_id
    counting = asyncio.create_task(asyncio.to_thread(agent.input, "count to 40 slowly", timeout=60))
    while agent._last_event_id == seen:  # an event of the new turn reached the client: the turn is running
        assert not counting.done(), counting.result()
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(agent.stop) is True
    stopped = await asyncio.wait_for(counting, 30)
    assert stopped.done and stopped.text == ""
    assert agent.current_session["turn"] == 2
    after = await asyncio.to_thread(agent.input, "what is my name", timeout=20)
    assert after.text == "Your name is Ada."
    assert agent.current_session["turn"] == 3
    assert agent._session_id == agent.current_session["session_id"]
