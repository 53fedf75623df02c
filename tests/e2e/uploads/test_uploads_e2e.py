"""Images and files over HTTP and WebSocket against a real host (issue 7)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.support.uploads import PDF, data_url, png


def post(host, body: dict) -> httpx.Response:
    return httpx.post(host.url + "/input", json=body, timeout=30)


def uploads(project) -> list[str]:
    folder = project / ".co" / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_png_reaches_the_agent_as_an_image(demo_host):
    r = post(demo_host, {"prompt": "what do you see?", "images": [data_url("image/png", png(3, 2))]})
    assert r.status_code == 200, r.text
    assert "a 3x2 PNG" in r.json()["result"]
    user = [m for m in r.json()["session"]["messages"] if m["role"] == "user"][-1]
    assert user["content"][1]["type"] == "image_url"


def test_pdf_is_saved_and_read_by_a_tool(demo_host, project):
    r = post(
        demo_host,
        {"prompt": "read the file", "files": [{"name": "report.pdf", "data": data_url("application/pdf", PDF)}]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "Quarterly revenue grew nicely" in body["result"]
    assert (project / ".co" / "uploads" / "report.pdf").read_bytes() == PDF
    tools = [t for t in body["session"]["trace"] if t.get("type") == "tool_result"]
    assert tools and tools[0]["name"] == "read_file"
    # the file's bytes never enter the model's messages; the reminder names the saved path, relative to the
    # host's folder (the conversation travels to the client: never the server's absolute path, D16)
    reminder = [m for m in body["session"]["messages"] if m.get("internal")]
    assert "- .co/uploads/report.pdf\n" in reminder[0]["content"]
    assert str(project) not in r.text
    assert "JVBER" not in json.dumps(body["session"]["messages"])


def test_traversal_names_land_inside_uploads(demo_host, project):
    files = [{"name": n, "data": data_url("text/plain", b"x")} for n in ("../../etc/passwd", "/abs/evil.txt")]
    r = post(demo_host, {"prompt": "read the file", "files": files})
    assert r.status_code == 200, r.text
    assert uploads(project) == ["evil.txt", "passwd"]
    assert not (project.parent / "etc").exists()


@pytest.fixture(scope="module")
def refusing(module_hosts):
    """One demo host for every refused upload below (each leaves it as it found it, which they check)."""
    return module_hosts(name="refusing")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"files": [{"name": f"f{i}.txt", "data": data_url("text/plain", b"x")} for i in range(11)]},
            "Too many files: 11 (max: 10). Increase max_files_per_request in host.yaml",
        ),
        (
            {"images": [data_url("image/png", png())] * 11},
            "Too many images: 11 (max: 10). Increase max_files_per_request in host.yaml",
        ),
        ({"images": "not a list"}, "images must be a list of strings"),
        ({"images": ["http://169.254.169.254/latest"]}, "images must be data URLs"),
        ({"images": [data_url("image/svg+xml", b"<svg/>")]}, "unsupported image type: image/svg+xml"),
        ({"images": ["data:image/png;base64,!!!!"]}, "invalid base64 in image 0"),
        ({"files": [{"data": data_url("text/plain", b"x")}]}, "files[0].name required"),
        ({"files": [{"name": "a\x00.txt", "data": data_url("text/plain", b"x")}]}, "invalid file name"),
    ],
)
def test_bad_uploads_are_refused_before_anything_is_written(refusing, body, message):
    project = refusing.project  # a host of this test's own: nothing else uploads to it
    before = (project / ".co" / "session_results.jsonl").read_bytes()
    r = post(refusing, {"prompt": "hi", **body})
    assert r.status_code == 400
    assert r.json() == {"error": message}
    assert uploads(project) == []
    assert (project / ".co" / "session_results.jsonl").read_bytes() == before


def test_file_over_the_configured_limit_reports_its_size(start_host, project):
    (project / ".co").mkdir()
    (project / ".co" / "host.yaml").write_text("max_file_size: 1\nmax_files_per_request: 3\n")
    host = start_host()
    assert httpx.get(host.url + "/info").json()["accepted_inputs"]["files"] == {
        "max_file_size_mb": 1,
        "max_files_per_request": 3,
    }
    big = b"\0" * int(1.5 * 1024 * 1024)
    r = post(
        host,
        {
            "prompt": "hi",
            "files": [
                {"name": "a.txt", "data": data_url("text/plain", b"ok")},
                {"name": "big.bin", "data": data_url("application/octet-stream", big)},
            ],
        },
    )
    assert r.status_code == 400
    assert r.json() == {"error": "File too large: big.bin (1.5MB, max: 1MB). Increase max_file_size in host.yaml"}
    assert uploads(project) == []


def test_cli_limits_override_and_show_in_info(start_host):
    host = start_host("--max-file-size", "50", "--max-files-per-request", "5")
    files = httpx.get(host.url + "/info").json()["accepted_inputs"]["files"]
    assert files == {"max_file_size_mb": 50, "max_files_per_request": 5}
    r = post(
        host, {"prompt": "hi", "files": [{"name": f"{i}", "data": data_url("text/plain", b"x")} for i in range(6)]}
    )
    assert r.json() == {"error": "Too many files: 6 (max: 5). Increase max_files_per_request in host.yaml"}


def test_websocket_upload_limit_is_an_error_frame_and_the_socket_stays_open(demo_host, project):
    async def scenario() -> tuple[dict, dict]:
        async with websockets.connect(demo_host.ws_url) as ws:
            await ws.send(json.dumps({"type": "INIT"}))
            assert json.loads(await ws.recv())["type"] == "CONNECTED"
            files = [{"name": f"{i}.txt", "data": data_url("text/plain", b"x")} for i in range(11)]
            await ws.send(json.dumps({"type": "INPUT", "prompt": "hi", "files": files}))
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(
                json.dumps(
                    {
                        "type": "INPUT",
                        "prompt": "read the file",
                        "files": [{"name": "n.txt", "data": data_url("text/plain", b"note")}],
                    }
                )
            )
            while (frame := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "OUTPUT":
                if frame["type"] == "files_received":
                    received = frame
            return error, received

    error, received = asyncio.run(scenario())
    assert error["type"] == "ERROR"
    assert error["message"] == "Too many files: 11 (max: 10). Increase max_files_per_request in host.yaml"
    assert [f["name"] for f in received["files"]] == ["n.txt"]
    assert uploads(project) == ["n.txt"]


def test_same_name_twice_keeps_both_files(demo_host, project):
    for content in (b"first", b"second"):
        r = post(
            demo_host,
            {"prompt": "read the file", "files": [{"name": "a.txt", "data": data_url("text/plain", content)}]},
        )
        assert r.status_code == 200
    assert uploads(project) == ["a-1.txt", "a.txt"]
    assert (project / ".co" / "uploads" / "a.txt").read_bytes() == b"first"
