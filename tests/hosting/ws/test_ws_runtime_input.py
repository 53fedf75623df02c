"""Runtime input (issue 17.7b): an INPUT sent while the session's turn runs goes into that turn when its agent
takes runtime input (``RUNTIME_INPUT_ACK``), else ``ERROR`` ``RUNTIME_INPUT_REJECTED`` and the turn goes on.
In-process, the real ASGI application and the demo agent's 'count slowly until I say stop'."""

from __future__ import annotations

import time
import uuid

import pytest
from channels.testing import WebsocketCommunicator
from nacl.signing import SigningKey

from connectonion_site.asgi import application
from tests.support.ws import frames_until
from trust.signing import sign_payload

pytestmark = pytest.mark.django_db(transaction=True)


async def connected() -> tuple[WebsocketCommunicator, str]:
    comm = WebsocketCommunicator(application, "/ws")
    ok, _ = await comm.connect()
    assert ok
    await comm.send_json_to({"type": "CONNECT"})
    hello = await frames_until(comm, "AGENT_PROFILE")
    return comm, hello[0]["session_id"]


def heard(prompt: str):
    """The agent read a runtime input: its ``user_input`` trace event."""
    return lambda f: f["type"] == "user_input" and f.get("runtime_input") is True and f["content"] == prompt


async def test_an_input_while_a_steerable_turn_runs_is_acknowledged_and_steers_the_turn():
    comm, sid = await connected()
    await comm.send_json_to({"type": "INPUT", "prompt": "count slowly until I say stop"})
    await frames_until(comm, "tool_result")
    await comm.send_json_to({"type": "INPUT", "prompt": "count by 10", "input_id": "steer-1"})
    ack = (await frames_until(comm, ("RUNTIME_INPUT_ACK", "ERROR")))[-1]
    assert ack["type"] == "RUNTIME_INPUT_ACK" and ack["session_id"] == sid and ack["input_id"] == "steer-1", ack
    assert str(uuid.UUID(ack["id"])) == ack["id"]
    await frames_until(comm, heard("count by 10"))
    stepped = (
        await frames_until(comm, lambda f: f["type"] == "tool_result" and f["args"]["expression"].endswith("+10"))
    )[-1]
    await comm.send_json_to({"type": "INPUT", "prompt": "please stop now"})
    assert (await frames_until(comm, ("RUNTIME_INPUT_ACK", "ERROR")))[-1]["type"] == "RUNTIME_INPUT_ACK"
    output = (await frames_until(comm, ("OUTPUT", "ERROR")))[-1]
    assert output["type"] == "OUTPUT" and output.get("status") != "cancelled", output
    assert output["result"].endswith("Stopped because you said 'please stop now'."), output
    assert stepped["result"] in output["result"].split(". ")[0].split(", ")
    users = [m["content"] for m in output["session"]["messages"] if m["role"] == "user"]
    assert users == ["count slowly until I say stop", "count by 10", "please stop now"]
    # The session is free again: the next INPUT is a new turn of the same conversation.
    await comm.send_json_to({"type": "INPUT", "prompt": "what time is it"})
    after = (await frames_until(comm, ("OUTPUT", "ERROR")))[-1]
    assert after["type"] == "OUTPUT" and after["session"]["turn"] == 2, after
    await comm.disconnect()


async def test_an_input_while_a_turn_that_takes_no_runtime_input_runs_is_rejected_and_the_turn_goes_on():
    comm, sid = await connected()
    await comm.send_json_to({"type": "INPUT", "prompt": "quiz me"})
    question = (await frames_until(comm, "ask_user"))[-1]
    await comm.send_json_to({"type": "INPUT", "prompt": "what time is it"})
    error = (await frames_until(comm, ("ERROR", "RUNTIME_INPUT_ACK", "OUTPUT")))[-1]
    assert error["type"] == "ERROR" and error["code"] == "RUNTIME_INPUT_REJECTED", error
    assert error["retryable"] is True and error["session_id"] == sid
    assert error["message"] == "session already has a running agent" and "retry after its OUTPUT" in error["hint"]
    await comm.send_json_to({"type": "ASK_USER_RESPONSE", "answer": "Paris", "request_id": question["id"]})
    output = (await frames_until(comm, ("OUTPUT", "ERROR")))[-1]
    assert output["type"] == "OUTPUT" and output["result"] == "Correct!", output
    users = [m["content"] for m in output["session"]["messages"] if m["role"] == "user"]
    assert users == ["quiz me"]
    await comm.disconnect()


async def test_a_runtime_input_is_checked_like_any_input():
    comm, _sid = await connected()
    await comm.send_json_to({"type": "INPUT", "prompt": "count slowly until I say stop"})
    await frames_until(comm, "tool_result")
    await comm.send_json_to({"type": "INPUT"})
    assert (await frames_until(comm, "ERROR"))[-1]["message"] == "prompt required"
    await comm.send_json_to({"type": "INPUT", "prompt": "stop", "images": ["data:image/png;base64,iVBORw0KGgo="]})
    refused = (await frames_until(comm, "ERROR"))[-1]
    assert refused["message"] == "runtime input is text only: attach files to the next turn", refused
    await comm.send_json_to({"type": "INPUT", "prompt": "stop"})
    assert (await frames_until(comm, ("RUNTIME_INPUT_ACK", "ERROR")))[-1]["type"] == "RUNTIME_INPUT_ACK"
    output = (await frames_until(comm, ("OUTPUT", "ERROR")))[-1]
    assert output["result"].endswith("Stopped because you said 'stop'."), output
    await comm.disconnect()


async def test_someone_else_naming_the_session_cannot_steer_its_turn():
    """The turn is a signer's; an anonymous socket naming its session gets a session of its own (PROTOCOL §4.3),
    so its INPUT starts its own turn there and never reaches the signer's."""
    comm = WebsocketCommunicator(application, "/ws")
    await comm.connect()
    await comm.send_json_to({"type": "CONNECT"})
    to = (await frames_until(comm, "AGENT_PROFILE"))[-1]["address"]
    await comm.disconnect()
    owner = WebsocketCommunicator(application, "/ws")
    await owner.connect()
    await owner.send_json_to(
        {"type": "CONNECT", **sign_payload(SigningKey.generate(), {"to": to, "timestamp": int(time.time())})}
    )
    sid = (await frames_until(owner, "AGENT_PROFILE"))[0]["session_id"]
    await owner.send_json_to({"type": "INPUT", "prompt": "count slowly until I say stop"})
    await frames_until(owner, "tool_result")
    other = WebsocketCommunicator(application, "/ws")
    await other.connect()
    await other.send_json_to({"type": "CONNECT", "session_id": sid})
    hello = await frames_until(other, "AGENT_PROFILE")
    await other.send_json_to({"type": "INPUT", "prompt": "stop"})
    answer = (await frames_until(other, ("RUNTIME_INPUT_ACK", "ERROR", "OUTPUT")))[-1]
    await owner.send_json_to({"type": "INPUT", "prompt": "stop it"})
    output = (await frames_until(owner, ("OUTPUT", "ERROR")))[-1]
    await other.disconnect()
    await owner.disconnect()
    assert hello[0]["session_id"] != sid and answer["type"] == "OUTPUT", (hello, answer)
    assert answer["session_id"] != sid and "You said: stop" in answer["result"], answer
    assert output["result"].endswith("Stopped because you said 'stop it'."), output
