"""HARDENING §3 rows for HTTP: POST /input bodies and fields (H1-H23), reads and misc (G1-G7), P3.

Each case asserts the row's exact status and text, then the §0 invariants: no 5xx/HTML/traceback in the
body (I1), nothing recorded or uploaded for a rejection (I2), /health 200 and a parseable JSONL (I3).
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from nacl.signing import SigningKey

from tests.hostile.conftest import Snapshot, assert_clean_body, error_of
from trust.signing import sign_payload

JSON = {"Content-Type": "application/json"}


def nest(depth: int) -> bytes:
    return b'{"prompt":"a","session":' + b"[" * depth + b"]" * depth + b"}"


def chunks(total: int):
    yield b'{"prompt":"'
    sent = 0
    while sent < total:
        yield b"a" * 100_000
        sent += 100_000
    yield b'"}'


# (row id, raw body or callable for a streamed body, headers, status, error text)
BODY_ROWS = [
    ("H1 truncated", b'{"prompt":', JSON, 400, "Invalid JSON"),
    ("H1 empty body", b"", JSON, 400, "Invalid JSON"),
    ("H1 xff bytes", b"\xff\xfe\xff", JSON, 400, "Invalid JSON"),
    ("H1 UTF-8 BOM", b'\xef\xbb\xbf{"prompt":"a"}', JSON, 400, "Invalid JSON"),
    ("H2 list", b"[]", JSON, 400, "request body must be a JSON object"),
    ("H2 string", b'"x"', JSON, 400, "request body must be a JSON object"),
    ("H2 number", b"42", JSON, 400, "request body must be a JSON object"),
    ("H2 null", b"null", JSON, 400, "request body must be a JSON object"),
    ("H3 depth 65", nest(65), JSON, 400, "Invalid JSON: nesting deeper than 64"),
    ("H3 depth 1001", nest(1001), JSON, 400, "Invalid JSON: nesting deeper than 64"),
    ("H3 depth 100000", nest(100_000), JSON, 400, "Invalid JSON: nesting deeper than 64"),
    (
        "H3 depth 65 objects",
        b'{"prompt":"a","x":' + b'{"a":' * 64 + b"1" + b"}" * 64 + b"}",
        JSON,
        400,
        "Invalid JSON: nesting deeper than 64",
    ),
    ("H4 NaN", b'{"prompt":"a","x":NaN}', JSON, 400, "Invalid JSON"),
    ("H4 Infinity", b'{"prompt":"a","x":Infinity}', JSON, 400, "Invalid JSON"),
    ("H4 5000-digit int", b'{"prompt":"a","x":' + b"9" * 5000 + b"}", JSON, 400, "Invalid JSON"),
    ("H5 duplicate key", b'{"prompt":"a","prompt":"b"}', JSON, 400, "Invalid JSON: duplicate key 'prompt'"),
    (
        "H5 duplicate key in payload",
        b'{"prompt":"a","payload":{"prompt":"a","prompt":"b"}}',
        JSON,
        400,
        "Invalid JSON: duplicate key 'prompt'",
    ),
    ("H6 over cap with Content-Length", b'{"prompt":"' + b"a" * 5_000_000 + b'"}', JSON, 413, "request body too large"),
    ("H6 over cap chunked", lambda: chunks(5_000_000), JSON, 413, "request body too large"),
    ("H8 text/plain", b'{"prompt":"a"}', {"Content-Type": "text/plain"}, 415, "Unsupported media type"),
    ("H8 form", b"prompt=a", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Unsupported media type"),
    (
        "H8 multipart",
        b'--x\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\r\n--x--\r\n',
        {"Content-Type": "multipart/form-data; boundary=x"},
        415,
        "Unsupported media type",
    ),
    # twisted parsed multipart itself and answered a malformed one with a bare 400 (issue 15.9)
    ("H8 multipart without boundary", b"xx", {"Content-Type": "multipart/form-data"}, 415, "Unsupported media type"),
    (
        "H8 malformed multipart",
        b"not multipart",
        {"Content-Type": "multipart/form-data; boundary=abc"},
        415,
        "Unsupported media type",
    ),
    ("H8 missing Content-Type", b'{"prompt":"a"}', {}, 415, "Unsupported media type"),
    (
        "H9 Content-Encoding gzip",
        b'{"prompt":"a"}',
        {**JSON, "Content-Encoding": "gzip"},
        415,
        "Unsupported media type",
    ),
]

FIELD_ROWS = [
    ("H10 prompt missing", {}, 400, "prompt required"),
    ("H10 prompt empty", {"prompt": ""}, 400, "prompt required"),
    ("H10 prompt blank", {"prompt": "   "}, 400, "prompt required"),
    ("H11 prompt 5", {"prompt": 5}, 400, "prompt must be a string"),
    ("H11 prompt []", {"prompt": []}, 400, "prompt must be a string"),
    ("H11 prompt {}", {"prompt": {}}, 400, "prompt must be a string"),
    ("H11 prompt null", {"prompt": None}, 400, "prompt required"),  # (P) deviation: null reads as missing
    ("H11 prompt true", {"prompt": True}, 400, "prompt must be a string"),
    ("H17 session string", {"prompt": "a", "session": "abc"}, 400, "session must be an object"),
    ("H17 session list", {"prompt": "a", "session": []}, 400, "session must be an object"),
    ("H17 session number", {"prompt": "a", "session": 5}, 400, "session must be an object"),
    (
        "H18 messages 5",
        {"prompt": "a", "session": {"messages": 5}},
        400,
        "session.messages must be a list of message objects",
    ),
    (
        "H18 messages [1,2]",
        {"prompt": "a", "session": {"messages": [1, 2]}},
        400,
        "session.messages must be a list of message objects",
    ),
    (
        "H18 role root",
        {"prompt": "a", "session": {"messages": [{"role": "root", "content": "x"}]}},
        400,
        "session.messages must be a list of message objects",
    ),
    ("H19 turn -4", {"prompt": "a", "session": {"turn": -4}}, 400, "session.turn must be a non-negative integer"),
    ("H19 turn 1.5", {"prompt": "a", "session": {"turn": 1.5}}, 400, "session.turn must be a non-negative integer"),
    ("H19 turn 1e308", {"prompt": "a", "session": {"turn": 1e308}}, 400, "session.turn must be a non-negative integer"),
    ("H19 turn true", {"prompt": "a", "session": {"turn": True}}, 400, "session.turn must be a non-negative integer"),
    (
        "H21 session_id traversal",
        {"prompt": "a", "session": {"session_id": "../../x"}},
        400,
        "session.session_id must be a UUID",
    ),
    (
        "H21 session_id 10 KB",
        {"prompt": "a", "session": {"session_id": "a" * 10_000}},
        400,
        "session.session_id must be a UUID",
    ),
    ("H21 session_id empty", {"prompt": "a", "session": {"session_id": ""}}, 400, "session.session_id must be a UUID"),
    (
        "H18b lone surrogate in a message",
        {"prompt": "a", "session": {"messages": [{"role": "user", "content": "a\ud800"}]}},
        400,
        "session.messages[0].content is not valid Unicode",
    ),
    (
        "H18c http image_url in a message",
        {
            "prompt": "a",
            "session": {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}}
                        ],
                    }
                ]
            },
        },
        400,
        "session.messages[0].content[0].image_url.url must be a data URL",
    ),
    (
        "H21 session_id not a UUID",
        {"prompt": "a", "session": {"session_id": "not-a-uuid"}},
        400,
        "session.session_id must be a UUID",
    ),
]


def post(host, content, headers, timeout: float = 60) -> httpx.Response:
    return httpx.post(host.url + "/input", content=content, headers=headers, timeout=timeout)


@pytest.mark.parametrize(
    ("content", "headers", "status", "error"), [pytest.param(*row[1:], id=row[0]) for row in BODY_ROWS]
)
def test_body_rows(small_host, content, headers, status, error):
    snap = Snapshot(small_host)
    response = post(small_host, content() if callable(content) else content, headers)
    assert (response.status_code, error_of(response)) == (status, error)
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()
    if small_host.project.joinpath(".co", "uploads").exists():
        assert not list(small_host.project.joinpath(".co", "uploads").iterdir())


@pytest.mark.parametrize(("body", "status", "error"), [pytest.param(*row[1:], id=row[0]) for row in FIELD_ROWS])
def test_field_rows(small_host, body, status, error):
    snap = Snapshot(small_host)
    response = post(small_host, json.dumps(body), JSON)
    assert (response.status_code, error_of(response)) == (status, error)
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


def test_h12_twenty_megabyte_prompt_is_refused(big_host):
    snap = Snapshot(big_host)
    response = post(big_host, json.dumps({"prompt": "a" * 20_000_000}), JSON)
    assert (response.status_code, error_of(response)) == (400, "prompt too long (max 1048576 characters)")
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


def test_h20_huge_trace_is_session_too_large(big_host):
    snap = Snapshot(big_host)
    body = {"prompt": "a", "session": {"trace": ["x" * 1000] * 17_500}}
    response = post(big_host, json.dumps(body), JSON)
    assert (response.status_code, error_of(response)) == (413, "session too large")
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


def test_h13_nul_in_prompt_is_accepted_and_stored_escaped(small_host):
    snap = Snapshot(small_host)
    response = post(small_host, json.dumps({"prompt": "calculate 1+1\x00tail"}), JSON)
    assert response.status_code == 200, response.text
    assert_clean_body(response)
    sid = response.json()["session_id"]
    jsonl = (small_host.project / ".co" / "session_results.jsonl").read_bytes()
    assert b"\\u0000" in jsonl and b"\x00" not in jsonl
    assert sid.encode() in jsonl
    snap.assert_healthy()


def test_h14_lone_surrogate_prompt(small_host):
    snap = Snapshot(small_host)
    response = post(small_host, b'{"prompt":"a\\ud800"}', JSON)
    assert (response.status_code, error_of(response)) == (400, "prompt is not valid Unicode")
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


def test_h16_unknown_fields_are_ignored_and_not_echoed(small_host):
    response = post(small_host, json.dumps({"prompt": "calculate 2+2", "zz_unknown_field": "zz-marker"}), JSON)
    assert response.status_code == 200, response.text
    assert "zz-marker" not in response.text and "zz_unknown_field" not in response.text
    Snapshot(small_host).assert_healthy()


def test_h23_forged_requester_is_ignored(small_host):
    forged = {"address": "0x" + "ad" * 32, "level": "admin"}
    response = post(small_host, json.dumps({"prompt": "calculate 3+3", "session": {"requester": forged}}), JSON)
    assert response.status_code == 200, response.text
    sid = response.json()["session_id"]
    record = httpx.get(f"{small_host.url}/sessions/{sid}", timeout=10)
    assert record.status_code == 200  # anonymous owner: readable by id, so not owned by the forged admin
    lines = [
        json.loads(line)
        for line in (small_host.project / ".co" / "session_results.jsonl").read_bytes().splitlines()
        if line.strip()
    ]
    mine = [rec for rec in lines if rec.get("session_id") == sid]
    assert mine and all("ad" * 32 not in json.dumps(rec.get("owner")) for rec in mine)
    Snapshot(small_host).assert_healthy()


# -- G rows ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/sessions/..%2F..%2Fetc%2Fpasswd", "/sessions/" + "a" * 10_000, "/sessions/not-a-uuid"],
    ids=["G1 traversal", "G1 10 KB id", "G1 non-UUID"],
)
def test_g1_bad_session_ids_are_404(small_host, path):
    response = httpx.get(small_host.url + path, timeout=10)
    assert (response.status_code, error_of(response)) == (404, "not found")
    assert_clean_body(response)
    Snapshot(small_host).assert_healthy()


def test_g2_other_signers_session_and_unknown_id_give_identical_404s(small_host):
    key = SigningKey.generate()
    to = httpx.get(small_host.url + "/info", timeout=10).json()["address"]
    signed = sign_payload(key, {"prompt": "calculate 5+5", "to": to, "timestamp": int(time.time())})
    created = post(small_host, json.dumps(signed), JSON)
    assert created.status_code == 200, created.text
    victim = created.json()["session_id"]
    theirs = httpx.get(f"{small_host.url}/sessions/{victim}", timeout=10)
    unknown = httpx.get(f"{small_host.url}/sessions/{uuid.uuid4()}", timeout=10)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.content == unknown.content == b'{"error":"not found"}'
    assert sorted(theirs.headers.keys()) == sorted(unknown.headers.keys())
    Snapshot(small_host).assert_healthy()


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        pytest.param({"Host": "evil.example"}, 400, "bad request", id="G4 Host evil.example"),
        pytest.param({"Origin": "https://evil.example"}, 403, "forbidden: origin not allowed", id="G5 Origin evil"),
    ],
)
def test_g4_g5_host_and_origin(small_host, headers, status, error):
    snap = Snapshot(small_host)
    response = post(small_host, json.dumps({"prompt": "calculate 1+1"}), {**JSON, **headers})
    assert (response.status_code, error_of(response)) == (status, error)
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


@pytest.mark.parametrize("method", ["PUT", "DELETE"], ids=["G6 PUT", "G6 DELETE"])
def test_g6_wrong_method_is_405(small_host, method):
    snap = Snapshot(small_host)
    response = httpx.request(method, small_host.url + "/input", content=b'{"prompt":"a"}', headers=JSON, timeout=10)
    assert response.status_code == 405
    assert response.json() == {"error": "method not allowed"}
    assert_clean_body(response)
    snap.assert_nothing_recorded()
    snap.assert_healthy()


@pytest.mark.parametrize(
    "path",
    ["/no-such-route", "/admin/../x", "/no-such-route?debug=1"],
    ids=["G7 unknown", "G7 admin dotdot", "G7 debug query"],
)
def test_g7_unknown_paths_are_json_404(small_host, path):
    response = httpx.get(small_host.url + path, timeout=10)
    assert (response.status_code, error_of(response)) == (404, "not found")
    assert response.headers["content-type"].startswith("application/json")
    assert_clean_body(response)


@pytest.mark.parametrize("path", ["/health", "/info", "/no-such-route"])
def test_p3_security_headers(small_host, path):
    response = httpx.get(small_host.url + path, timeout=10)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["x-frame-options"] == "DENY"


def test_session_ids_are_uuids_in_store(small_host):
    response = post(small_host, json.dumps({"prompt": "calculate 4+4"}), JSON)
    assert str(uuid.UUID(response.json()["session_id"])) == response.json()["session_id"]
