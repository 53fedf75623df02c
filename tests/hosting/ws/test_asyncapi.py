"""``/asyncapi.json`` describes ``/ws`` truly: every frame of live conversations (questions, approvals, cancel,
resume, refusals) matches the document's schema for its type, and each frame we send matches a client message."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def host(module_hosts):
    return module_hosts("--trust", "careful", name="asyncapi")


@pytest.fixture(scope="module")
def document(host) -> dict:
    r = httpx.get(host.url + "/asyncapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    return r.json()


def messages(document: dict, prefix: str) -> dict[str, dict]:
    found = {}
    for name, message in document["components"]["messages"].items():
        if name.startswith(prefix):
            jsonschema.Draft202012Validator.check_schema(message["payload"])
            found[message["payload"]["properties"]["type"]["const"]] = message["payload"]
    return found


class Checked:
    """A socket whose every frame, both ways, is validated against the document."""

    def __init__(self, ws, document: dict) -> None:
        self.ws = ws
        self.host = messages(document, "host.")
        self.client = messages(document, "client.")
        self.seen: list[dict] = []

    def send(self, frame: dict) -> None:
        assert frame["type"] in self.client, f"{frame['type']} is not a documented client message"
        jsonschema.validate(frame, self.client[frame["type"]])
        self.ws.send(json.dumps(frame))

    def recv(self) -> dict:
        frame = json.loads(self.ws.recv(timeout=30))
        assert frame["type"] in self.host, f"{frame['type']} is not a documented host message: {frame}"
        jsonschema.validate(frame, self.host[frame["type"]])
        self.seen.append(frame)
        if frame["type"] == "PING":
            self.send({"type": "PONG"})
            return self.recv()
        return frame

    def until(self, *types: str) -> dict:
        while (frame := self.recv())["type"] not in types:
            pass
        return frame


def test_live_frames_match_the_asyncapi_document(host, document):
    assert document["asyncapi"].startswith("2.") and "/ws" in document["channels"]
    with connect(host.ws_url, open_timeout=10) as raw:
        ws = Checked(raw, document)
        ws.send({"type": "INIT"})
        connected = ws.until("CONNECTED")
        session_id = connected["session_id"]

        ws.send({"type": "INPUT", "prompt": "quiz me"})
        question = ws.until("ask_user")
        ws.send({"type": "ASK_USER_RESPONSE", "answer": "Paris", "request_id": question["id"]})
        assert ws.until("OUTPUT", "ERROR")["result"] == "Correct!"

        ws.send({"type": "INPUT", "prompt": "save a note: milk"})
        approval = ws.until("approval_needed")
        ws.send({"type": "APPROVAL_RESPONSE", "approved": True, "scope": "once", "request_id": approval["id"]})
        assert ws.until("OUTPUT", "ERROR")["type"] == "OUTPUT"

        ws.send({"type": "INPUT", "prompt": "count slowly until I say stop"})  # runtime input (issue 17.7b)
        ws.until("tool_result")
        ws.send({"type": "INPUT", "prompt": "stop", "input_id": "steer-1"})
        ack = ws.until("RUNTIME_INPUT_ACK", "ERROR")
        assert ack["type"] == "RUNTIME_INPUT_ACK" and ack["input_id"] == "steer-1", ack
        assert ws.until("user_input")["runtime_input"] is True
        assert ws.until("OUTPUT", "ERROR")["result"].endswith("Stopped because you said 'stop'.")

        ws.send({"type": "INPUT", "prompt": "quiz me"})  # takes no runtime input: refused, the turn goes on
        asked = ws.until("ask_user")
        ws.send({"type": "INPUT", "prompt": "stop"})
        refused = ws.until("RUNTIME_INPUT_ACK", "ERROR")
        assert refused["code"] == "RUNTIME_INPUT_REJECTED", refused
        ws.send({"type": "ASK_USER_RESPONSE", "answer": "Lyon", "request_id": asked["id"]})
        assert ws.until("OUTPUT", "ERROR")["type"] == "OUTPUT"

        ws.send({"type": "INPUT", "prompt": "count to 30 slowly"})
        ws.until("tool_result")
        ws.send({"type": "INTERRUPT"})
        assert ws.until("OUTPUT", "ERROR")["status"] == "cancelled"  # D29

        ws.send({"type": "ASK_USER_RESPONSE", "answer": "late", "request_id": question["id"]})
        ws.until("ERROR")
        raw.send(json.dumps({"type": "INPUT", "prompt": ""}))  # breaks the document on purpose: refused
        assert ws.until("ERROR")["message"] == "prompt required"
        last_seen = [f["id"] for f in ws.seen if "id" in f][-1]

    with connect(host.ws_url, open_timeout=10) as raw:
        again = Checked(raw, document)
        again.send({"type": "ATTACH", "session_id": session_id, "last_msg_id": last_seen})
        assert again.until("CONNECTED")["session_id"] == session_id
    seen = {f["type"] for f in ws.seen}
    assert {
        "CONNECTED",
        "user_input",
        "tool_call",
        "tool_result",
        "ask_user",
        "approval_needed",
        "OUTPUT",
        "ERROR",
        "RUNTIME_INPUT_ACK",
    } <= seen, seen
