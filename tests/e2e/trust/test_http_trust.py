"""Signed POST /input, levels, lists, policies and session ownership through real host processes."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from nacl.signing import SigningKey

from tests.conftest import MANAGE, host_env
from tests.e2e.trust.conftest import address, host_address, llm_env, post_input, wait_for_output
from tests.support.envelopes import signed
from tests.support.wait import wait_for
from trust.signing import sign_headers

ECHO = "tests.agents:echo_factory"


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("error")


def tampered(key: SigningKey, to: str) -> dict:
    body = signed(key, to, prompt="as signed")
    body["payload"]["prompt"] = "as changed"
    return body


@pytest.fixture(scope="module")
def echo_host(module_hosts):
    """One host at the default level for the tests that only send to it (each with keys of its own)."""
    return module_hosts(ECHO)


def test_signed_input_runs_only_the_payload_and_every_tamper_is_refused(echo_host):
    host = echo_host
    to = host_address(host)
    a = SigningKey.generate()
    body = signed(a, to, prompt="signed words", session={"messages": []})
    body.update(prompt="top-level words", session={"session_id": "x"})
    reply = post_input(host, body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["result"] == "echo: signed words"
    assert reply.json()["session_id"] != "x"  # the top-level session copy was ignored

    # the identical body again is a replay
    assert error(post_input(host, body)) == (401, "unauthorized: this CONNECT was already used")

    fresh = signed(a, to, prompt="tamper me", nested={"k": "v"})
    for change in (
        lambda b: b["payload"].update(prompt="changed"),
        lambda b: b["payload"]["nested"].update(k="w"),
        lambda b: b.update(signature=b["signature"][:-2] + ("00" if b["signature"][-2:] != "00" else "11")),
        lambda b: b.update(**{"from": address(SigningKey.generate())}),
        lambda b: b.update(signature="zz" * 64),
        lambda b: b.update(signature=b["signature"][:100]),
    ):
        tampered = {**fresh, "payload": {**fresh["payload"], "nested": dict(fresh["payload"]["nested"])}}
        change(tampered)
        assert error(post_input(host, tampered)) == (401, "unauthorized: invalid signature")

    now = time.time()
    assert error(post_input(host, signed(a, to, prompt="old", timestamp=now - 400))) == (
        401,
        "unauthorized: signature expired",
    )
    assert error(post_input(host, signed(a, to, prompt="future", timestamp=now + 400))) == (
        401,
        "unauthorized: signature expired",
    )
    assert error(post_input(host, signed(a, address(SigningKey.generate()), prompt="x"))) == (
        401,
        "unauthorized: wrong recipient",
    )
    out = wait_for_output(host, "reason=unauthorized: wrong recipient")
    assert f"identity={address(a)}" in out and "level=careful" in out and "decision=accept" in out
    assert "decision=reject" in out


def test_replay_is_refused_after_a_restart_within_the_window(start_host):
    host = start_host(ECHO)
    to = host_address(host)
    body = signed(SigningKey.generate(), to, prompt="once")
    assert post_input(host, body).status_code == 200
    host.stop()
    again = start_host(ECHO)
    assert error(post_input(again, body)) == (401, "unauthorized: this CONNECT was already used")


def test_levels_from_trust_argument_and_environment(start_host, tmp_path):
    a = SigningKey.generate()
    prod = start_host(ECHO, env={"CONNECTONION_ENV": "production"})
    to = host_address(prod)
    assert error(post_input(prod, {"prompt": "hi"})) == (401, "unauthorized: signed request required")
    assert post_input(prod, signed(a, to, prompt="hi")).status_code == 200  # strict: any valid signer
    assert error(post_input(prod, tampered(a, to))) == (401, "unauthorized: invalid signature")
    prod.stop()

    for folder, args, env in (
        (tmp_path / "dev", (ECHO,), {"CONNECTONION_ENV": "development"}),
        (tmp_path / "win", (ECHO, "--trust", "open"), {"CONNECTONION_ENV": "production"}),
        (tmp_path / "careful", (ECHO,), {}),
    ):
        folder.mkdir()
        host = start_host(*args, env=env, folder=folder)
        reply = post_input(host, {"prompt": "hi"})
        assert reply.status_code == 200, (folder.name, reply.text)
        assert error(post_input(host, tampered(a, host_address(host)))) == (401, "unauthorized: invalid signature")
        if folder.name == "careful":
            assert "signature recommended" in reply.headers.get("X-Co-Trust", "")
        host.stop()

    strict = tmp_path / "strict"
    (strict / ".co").mkdir(parents=True)
    (strict / ".co" / "host.yaml").write_text("strict_requires_whitelist: true\n")
    host = start_host(ECHO, "--trust", "strict", folder=strict)
    assert error(post_input(host, signed(a, host_address(host), prompt="hi"))) == (
        403,
        "forbidden: not on this agent's whitelist",
    )


def test_blacklist_from_every_source_beats_even_a_garbage_signature(start_host, project):
    by_arg, by_yaml, by_file = (SigningKey.generate() for _ in range(3))
    (project / ".co").mkdir()
    (project / ".co" / "host.yaml").write_text(f"blacklist:\n  - {address(by_yaml)}\n")
    (project / ".co" / "blocklist.txt").write_text(address(by_file) + "\n")
    host = start_host(ECHO, "--blacklist", address(by_arg))
    to = host_address(host)
    for key in (by_arg, by_yaml, by_file):
        good = signed(key, to, prompt="hi")
        assert error(post_input(host, good)) == (403, "forbidden: blacklisted")
        assert error(post_input(host, {**good, "signature": "nothex"})) == (403, "forbidden: blacklisted")
    assert post_input(host, signed(SigningKey.generate(), to, prompt="hi")).status_code == 200
    out = wait_for_output(host, "reason=forbidden: blacklisted")
    assert f"identity={address(by_arg)}" in out
    logs = "".join(p.read_text() for p in (project / ".co" / "logs").glob("*.log"))
    assert "forbidden: blacklisted" in logs and address(by_file) in logs


def test_whitelist_from_every_source_bypasses_a_rejecting_policy(start_host, project, fake_model):
    fake_model.decide("REJECT", "not on my guest list")
    by_arg, by_yaml, by_file, by_db, stranger = (SigningKey.generate() for _ in range(5))
    (project / ".co").mkdir()
    (project / ".co" / "host.yaml").write_text(f"whitelist:\n  - {address(by_yaml)}\n")
    (project / ".co" / "whitelist.txt").write_text(address(by_file) + "\n")
    host = start_host(
        ECHO,
        "--trust",
        "Only accept requests from researchers.",
        "--whitelist",
        address(by_arg),
        env=llm_env(fake_model),
    )
    to = host_address(host)
    for key in (by_arg, by_yaml, by_file):
        reply = post_input(host, signed(key, to, prompt="hello"))
        assert reply.status_code == 200, reply.text
        bad = signed(key, to, prompt="hello")
        bad["payload"]["prompt"] = "changed"
        assert error(post_input(host, bad)) == (401, "unauthorized: invalid signature")
    assert fake_model.requests == []  # whitelisted callers never reach the model

    assert error(post_input(host, signed(stranger, to, prompt="let me in"))) == (403, "forbidden: not on my guest list")
    text = fake_model.texts()
    assert "let me in" in text and address(stranger) in text and "Only accept requests from researchers." in text

    # an admin-style ListEntry in the host's database takes effect without a restart
    assert error(post_input(host, signed(by_db, to, prompt="db"))) == (403, "forbidden: not on my guest list")
    added = subprocess.run(
        [
            sys.executable,
            str(MANAGE),
            "shell",
            "-c",
            f"from trust.models import ListEntry; ListEntry.objects.create(address='{address(by_db)}', kind='whitelist')",
        ],
        cwd=project,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    wait_for(
        lambda: post_input(host, signed(by_db, to, prompt="db")).status_code == 200,
        10,
        "the database whitelist entry to take effect",
        interval=0.2,
    )
    out = wait_for_output(host, "reason=whitelisted")
    assert "level=custom" in out


def test_natural_language_policy_accept_reject_and_unavailable(start_host, fake_model, tmp_path):
    policy = "Only accept requests that ask about the weather."
    host = start_host(ECHO, "--trust", policy, env=llm_env(fake_model))
    to = host_address(host)
    a, b = SigningKey.generate(), SigningKey.generate()
    reply = post_input(host, signed(a, to, prompt="weather in Paris?"))
    assert reply.status_code == 200, reply.text
    first = fake_model.bodies()[-1]["messages"][-1]["content"]
    assert "weather in Paris?" in first and address(a) in first
    fake_model.decide("REJECT", "off topic")
    assert error(post_input(host, signed(b, to, prompt="tell a joke"))) == (403, "forbidden: off topic")
    host.stop()

    down = tmp_path / "down"
    down.mkdir()
    gone = start_host(ECHO, "--trust", policy, env=llm_env(None, url="http://127.0.0.1:9/v1"), folder=down)
    assert error(post_input(gone, signed(a, host_address(gone), prompt="weather?"))) == (
        503,
        "misconfigured: trust agent unavailable",
    )
    out = wait_for_output(gone, "reason=misconfigured: trust agent unavailable")
    assert "decision=error" in out


def test_sessions_belong_to_their_signer(echo_host):
    host = echo_host
    to = host_address(host)
    a, b = SigningKey.generate(), SigningKey.generate()
    made = post_input(host, signed(a, to, prompt="mine"))
    assert made.status_code == 200, made.text
    sid = made.json()["session_id"]
    anon = post_input(host, {"prompt": "anonymous words"}).json()["session_id"]

    def get(path: str, key: SigningKey | None) -> httpx.Response:
        headers = sign_headers(key, method="GET", path=path, to=to) if key else {}
        return httpx.get(host.url + path, headers=headers, timeout=10)

    assert get(f"/sessions/{sid}", b).status_code == 404
    assert get(f"/sessions/{sid}", None).status_code == 404
    assert get(f"/sessions/{sid}", a).status_code == 200
    assert get(f"/sessions/{anon}", None).status_code == 200

    headers = sign_headers(a, method="GET", path="/sessions", to=to)
    listed = httpx.get(host.url + "/sessions", headers=headers, timeout=10)
    assert [s["session_id"] for s in listed.json()["sessions"]] == [sid]
    again = httpx.get(host.url + "/sessions", headers=headers, timeout=10)
    assert error(again) == (401, "unauthorized: signature already used")

    anonymous = [s["session_id"] for s in get("/sessions", None).json()["sessions"]]
    assert anon in anonymous and sid not in anonymous

    stolen = post_input(host, signed(b, to, prompt="continue", session={"session_id": sid, "messages": []}))
    assert error(stolen) == (404, "Session not found")
