"""/admin/logs, /admin/sessions and the trust extras on a real host (PROTOCOL §3.7-§3.8, HARDENING A1-A6, I5)."""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.sessions_app.admin.conftest import ADMIN_TOKEN, API_KEY, SECRET_KEY, SECRETS_ENV
from trust.identity import load_identity
from trust.signing import sign_headers, sign_payload

MACHINE_DIR = Path("/nonexistent-machine-dir")
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[[^\]]+\] ")
NO_KEY = {"error": "forbidden: set OPENONION_API_KEY or CONNECTONION_ADMIN_TOKEN to use /admin"}


def _prepare(folder: Path) -> None:
    co = folder / ".co"
    load_identity(co, machine_dir=MACHINE_DIR)  # the host loads this key: we can sign as its own address
    evals = co / "evals"
    evals.mkdir(parents=True)
    (evals / "old.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "old eval",
                "created": "2020-01-01T00:00:00+00:00",
                "updated": "2020-01-02T00:00:00+00:00",
                "total_cost": 0.5,
                "total_tokens": 12,
                "turns": [{"role": "user", "content": "hi"}],
            }
        )
    )
    (evals / "broken.yaml").write_text("name: [unclosed\n  turns: {{{\n")
    marker = folder / "pwned"
    (evals / "evil.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    (evals / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")


@pytest.fixture(scope="module")
def host(module_host):
    return module_host(env=SECRETS_ENV, prepare=_prepare)


@pytest.fixture(scope="module")
def turns(host):
    """Two turns: a tool call, and a prompt that tries to forge a log line."""
    done = []
    for prompt in ("calculate (2+3)*7", "hello\n2001-01-01T00:00:00.000Z [demo] result forged\r\x1b[2J"):
        r = httpx.post(f"{host.url}/input", json={"prompt": prompt}, timeout=30)
        assert r.status_code == 200, r.text
        done.append(r.json()["session_id"])
    return done


def _raw_get(host, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """http.client sends header values as given (httpx refuses a trailing space, e.g. ``Bearer ``)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(host.url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _log_file(host) -> Path:
    return host.project / ".co" / "logs" / "demo.log"


def _admin(host, path: str, token: str | None = API_KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{host.url}{path}", headers=headers, timeout=10, **kw)


def test_activity_log_has_one_escaped_line_per_event(host, turns):
    lines = _log_file(host).read_text(encoding="utf-8").splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines
    text = "\n".join(lines)
    assert re.search(rf"input {turns[0][:8]}: calculate", text)
    assert re.search(rf"tool {turns[0][:8]} calculate: completed \([\d.]+ ms\) -> 35", text)
    assert re.search(rf"result {turns[0][:8]} \(\d+ ms\): ", text)
    assert "trust: trust decision: identity=anonymous" in text
    assert not any(line.startswith("2001-01-01") for line in lines)  # the forged line stayed inside its event
    assert "\\n2001-01-01T00:00:00.000Z [demo] result forged\\r\\x1b[2J" in text


def test_session_history_yaml_per_session(host, turns):
    data = yaml.safe_load((host.project / ".co" / "sessions" / f"{turns[0]}.yaml").read_text(encoding="utf-8"))
    assert data["name"] == "demo" and data["session_id"] == turns[0]
    assert {"created", "updated", "total_cost", "total_tokens"} <= data.keys()
    assert [t["role"] for t in data["turns"]] == ["user", "tool", "assistant"]
    assert data["turns"][0]["content"] == "calculate (2+3)*7"
    assert "35" in data["turns"][-1]["content"]
    assert not list((host.project / ".co" / "sessions").glob(".tmp-*"))


@pytest.mark.parametrize(
    "headers,query",
    [
        ({}, ""),
        ({"Authorization": "Bearer wrong"}, ""),
        ({"Authorization": "Bearer "}, ""),
        ({"Authorization": "Bearer"}, ""),
        ({"Authorization": f"Basic {API_KEY}"}, ""),
        ({"Authorization": f"Bearer {API_KEY[:-1]}"}, ""),
        ({"Authorization": f"Bearer {API_KEY}x"}, ""),
        ({"Authorization": f"Bearer {API_KEY}{ADMIN_TOKEN}"}, ""),
        ({}, f"?token={API_KEY}"),
    ],
)
def test_admin_rejects_missing_or_wrong_tokens_identically(host, headers, query):
    for path in ("/admin/logs", "/admin/sessions"):
        status, body = _raw_get(host, f"{path}{query}", headers)
        assert status == 401
        assert body == b'{"error":"unauthorized"}'


def test_admin_logs_with_either_secret(host, turns):
    for token in (API_KEY, ADMIN_TOKEN):
        r = _admin(host, "/admin/logs", token)
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert f"result {turns[1][:8]}" in r.text
    r = _admin(host, "/admin/logs?lines=2")
    assert r.status_code == 200 and len(r.text.splitlines()) == 2
    assert r.text.splitlines() == _log_file(host).read_text(encoding="utf-8").splitlines()[-2:]
    for bad in ("0", "-1", "abc", "10001"):
        r = _admin(host, f"/admin/logs?lines={bad}")
        assert r.status_code == 400 and r.json() == {"error": "lines must be an integer from 1 to 10000"}


def test_admin_sessions_from_evals_and_sessions(host, turns):
    r = _admin(host, "/admin/sessions", ADMIN_TOKEN)
    assert r.status_code == 200
    sessions = r.json()["sessions"]
    names = [s.get("name") for s in sessions]
    assert names[-1] == "old eval"  # oldest last; broken, binary and tagged files skipped
    assert len(sessions) == 3
    assert {s.get("session_id") for s in sessions[:2]} == set(turns)
    assert not (host.project / "pwned").exists()  # the !!python tag was never executed (safe_load)


def test_signed_admin_headers(host):
    identity = load_identity(host.project / ".co", machine_dir=MACHINE_DIR, create=False)
    signed = sign_headers(identity.signing_key, method="GET", path="/admin/sessions", to=identity.address)
    r = httpx.get(f"{host.url}/admin/sessions", headers=signed, timeout=10)
    assert r.status_code == 200 and "sessions" in r.json()
    replay = httpx.get(f"{host.url}/admin/sessions", headers=signed, timeout=10)
    assert replay.status_code == 401
    from nacl.signing import SigningKey

    stranger = sign_headers(SigningKey.generate(), method="GET", path="/admin/logs", to=identity.address)
    r = httpx.get(f"{host.url}/admin/logs", headers=stranger, timeout=10)
    assert r.status_code == 403 and r.json() == {"error": "forbidden: admin only"}


def test_unknown_admin_paths_are_404(host):
    for path in ("/admin/unknown", "/admin/logs/", "/admin", "/superadmin/list"):
        r = _admin(host, path)
        assert r.status_code == 404 and r.json() == {"error": "not found"}, path


def _signed_post(host, key, path: str, **fields) -> httpx.Response:
    identity = load_identity(host.project / ".co", machine_dir=MACHINE_DIR, create=False)
    body = sign_payload(
        key,
        {
            "method": "POST",
            "path": path,
            "timestamp": int(time.time()),
            "nonce": uuid.uuid4().hex,
            "to": identity.address,
            **fields,
        },
    )
    return httpx.post(f"{host.url}{path}", json=body, timeout=10)


def test_trust_extras(host):
    from nacl.signing import SigningKey

    key = load_identity(host.project / ".co", machine_dir=MACHINE_DIR, create=False).signing_key
    client = "0x" + "ab" * 32
    r = _signed_post(host, key, "/admin/trust/promote", client_id=client)
    assert r.json() == {"success": True, "message": f"{client} is now contact", "level": "contact"}
    assert _signed_post(host, key, "/admin/trust/promote", client_id=client).json()["level"] == "whitelist"
    assert _signed_post(host, key, "/admin/trust/promote", client_id=client).json() == {
        "error": "Already at highest level",
        "level": "whitelist",
    }
    assert _signed_post(host, key, "/admin/trust/demote", client_id=client).json()["level"] == "contact"
    assert _signed_post(host, key, "/admin/trust/block", client_id=client, reason="spam").json()["level"] == "blocked"
    own = load_identity(host.project / ".co", machine_dir=MACHINE_DIR, create=False).address
    headers = sign_headers(key, method="GET", path=f"/admin/trust/level/{client}", to=own)
    r = httpx.get(f"{host.url}/admin/trust/level/{client}", headers=headers, timeout=10)
    assert r.json() == {"client_id": client, "level": "blocked"}
    assert _signed_post(host, key, "/admin/trust/unblock", client_id=client).json()["level"] == "contact"
    r = _signed_post(host, key, "/admin/trust/promote")
    assert r.status_code == 400 and r.json() == {"error": "client_id required"}
    # a route-bound signature cannot be replayed on another route
    other = SigningKey.generate()
    r = _signed_post(host, other, "/superadmin/add", admin_id="0x" + "cd" * 32)
    assert r.status_code == 403 and r.json() == {"error": "forbidden: super admin only"}
    r = _signed_post(host, key, "/superadmin/add", admin_id="0x" + "cd" * 32)
    assert r.status_code == 200 and r.json()["success"] is True
    r = _signed_post(host, key, "/superadmin/remove", admin_id="0x" + "cd" * 32)
    assert r.status_code == 200 and r.json()["success"] is True


def test_wrong_tokens_are_rate_limited_per_address(host):
    """A4: after 20 wrong tokens from one address, 429 with Retry-After; another address is unaffected."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as other:
        codes = [
            other.get(f"{host.url}/admin/logs", headers={"Authorization": f"Bearer guess{i}"}).status_code
            for i in range(25)
        ]
        assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}
        limited = other.get(f"{host.url}/admin/logs", headers={"Authorization": f"Bearer {API_KEY}"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert _admin(host, "/admin/logs").status_code == 200  # 127.0.0.1 still gets in


def test_no_secret_anywhere(host, turns):
    """I5: canary secrets never reach the log files, the host's output or /admin/logs."""
    identity = load_identity(host.project / ".co", machine_dir=MACHINE_DIR, create=False)
    canaries = [API_KEY, ADMIN_TOKEN, SECRET_KEY, bytes(identity.signing_key).hex()]
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in (host.project / ".co" / "logs").iterdir()]
    texts += [host.output(), _admin(host, "/admin/logs?lines=10000").text, _admin(host, "/admin/sessions").text]
    for canary in canaries:
        assert not any(canary in text for text in texts)


def test_without_a_configured_secret_admin_is_forbidden(module_host):
    """No secret on the server: 403 saying how to set one, whatever the header (an empty secret never matches)."""
    host = module_host(env={"OPENONION_API_KEY": "", "CONNECTONION_ADMIN_TOKEN": ""})
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
        for path in ("/admin/logs", "/admin/sessions"):
            status, body = _raw_get(host, path, headers)
            assert status == 403 and json.loads(body) == NO_KEY


def test_huge_log_is_tailed_not_read(module_host):
    """A5: a 200 MiB log answers with a bounded tail without growing the host's memory."""
    host = module_host(env={"OPENONION_API_KEY": API_KEY})
    log = _log_file(host)
    log.parent.mkdir(parents=True, exist_ok=True)
    block = b"".join(b"2026-01-01T00:00:00.000Z [demo] filler line %07d\n" % i for i in range(20000))
    with log.open("wb") as f:
        written = 0
        while written < 200 * 1024 * 1024:
            f.write(block)
            written += len(block)
    process = psutil.Process(host.proc.pid)
    before = process.memory_info().rss
    r = _admin(host, "/admin/logs?lines=500")
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert len(lines) == 500 and lines[-1].endswith("filler line 0019999")
    r = _admin(host, "/admin/logs?lines=10000")
    assert len(r.text.splitlines()) == 10000
    assert process.memory_info().rss - before < 50 * 1024 * 1024


def test_missing_log_is_404(module_host):
    host = module_host(env={"CONNECTONION_ADMIN_TOKEN": ADMIN_TOKEN})
    r = _admin(host, "/admin/logs", ADMIN_TOKEN)
    assert r.status_code == 404 and r.json() == {"error": "No logs found"}
    r = _admin(host, "/admin/sessions", ADMIN_TOKEN)
    assert r.status_code == 200 and r.json() == {"sessions": []}
