"""Issue 15 follow-up: an upload's ``files_received`` event and its trace entry name the stored file, and the
reminder the agent gets (which travels in the session) a path relative to the host's folder: never the server's
absolute path (D16, PROTOCOL §6.3), in any frame or body, at all three doors: HTTP, /ws and through our relay."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from tests.conftest import HostProcess
from tests.hosting.relay.conftest import client_socket, recv_json, relay_process  # noqa: F401 - a fixture
from tests.support.hosts import wait_listed
from tests.support.uploads import data_url

FILES = [{"name": "../../secret/report.txt", "data": data_url("text/plain", b"hi")}]
INPUT = {"type": "INPUT", "prompt": "read the file", "files": FILES}


async def _turn(ws, project) -> tuple[list[dict], dict]:
    """The ``files_received`` events and the OUTPUT of one turn; no frame of it names the project's folder."""
    events = []
    while (frame := await recv_json(ws, 20))["type"] != "OUTPUT":
        assert frame["type"] != "ERROR", frame
        assert str(project) not in json.dumps(frame), frame
        if frame["type"] == "files_received":
            events.append(frame)
    assert str(project) not in json.dumps(frame), frame
    return events, frame


def _trace_files(session: dict) -> list[dict]:
    return [f for t in session["trace"] if t.get("type") == "files_received" for f in t["files"]]


def _assert_no_path(project, events: list[dict], session: dict) -> None:
    listed = [f for e in events for f in e["files"]] + _trace_files(session)
    assert listed, "no files_received"
    assert str(project) not in json.dumps(listed), listed
    assert all(f["name"] == f["path"] and "/" not in f["path"] for f in listed), listed


async def test_files_received_never_carries_a_server_path(relay_process, tmp_path_factory):  # noqa: F811
    relay = relay_process()
    project = tmp_path_factory.mktemp("project")  # not under the relay's folder (its .co/ would be found)
    host = await asyncio.to_thread(HostProcess(project, "--relay-url", relay.base).start)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(host.url + "/input", json={"prompt": "read the file", "files": FILES})
            assert r.status_code == 200, r.text
            _assert_no_path(project, [], r.json()["session"])
            assert str(project) not in r.text
            stored = await http.get(host.url + f"/sessions/{r.json()['session_id']}")
            _assert_no_path(project, [], stored.json()["session"])
            assert str(project) not in stored.text
            address = (await http.get(host.url + "/info")).json()["address"]
        async with websockets.connect(host.ws_url) as ws:
            await ws.send(json.dumps({"type": "INIT"}))
            assert (await recv_json(ws))["type"] == "CONNECTED"
            await ws.send(json.dumps(INPUT))
            events, output = await _turn(ws, project)
            _assert_no_path(project, events, output["session"])
        await asyncio.to_thread(wait_listed, relay.http, address)
        async with client_socket(relay, {"type": "CONNECT", "to": address}) as ws:
            assert (await recv_json(ws, 20))["type"] == "CONNECTED"
            await ws.send(json.dumps({**INPUT, "to": address}))
            events, output = await _turn(ws, project)
            _assert_no_path(project, events, output["session"])
        assert sorted(p.name for p in (project / ".co" / "uploads").iterdir()) == [
            "report-1.txt",
            "report-2.txt",
            "report.txt",
        ]
    finally:
        await asyncio.to_thread(host.stop)
