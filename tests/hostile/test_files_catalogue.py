"""HARDENING §3 rows for files, keys and config: F1, F4-F8. Every start is a real ``runhost`` process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import MANAGE, HostProcess, free_port, host_env


def run_host_expecting_failure(folder, timeout: float = 40) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(MANAGE), "runhost", "--no-relay", "--port", str(free_port())],
        cwd=folder,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[-2000:]


@pytest.mark.parametrize("size", [0, 31, 33, 64], ids=lambda n: f"F1 agent.key {n} bytes")
def test_f1_corrupt_key_refuses_to_start_and_is_never_replaced(tmp_path, size):
    keys = tmp_path / ".co" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    key = keys / "agent.key"
    key.write_bytes(os.urandom(size))
    key.chmod(0o600)
    before = hashlib.sha256(key.read_bytes()).hexdigest()
    done = run_host_expecting_failure(tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert str(key) in out
    assert_no_traceback(out)
    assert hashlib.sha256(key.read_bytes()).hexdigest() == before


@pytest.mark.parametrize(
    ("yaml", "key_line"),
    [
        ('port: "abc"\n', "host.yaml: port must be an integer"),
        ("max_file_size: -1\n", "host.yaml: max_file_size must be at least 1"),
        ("trust: 5\n", "host.yaml: trust must be a trust level"),
    ],
    ids=["F4 port abc", "F4 max_file_size -1", "F4 trust 5"],
)
def test_f4_wrong_types_exit_2_with_one_line_naming_the_key(tmp_path, yaml, key_line):
    (tmp_path / ".co").mkdir()
    (tmp_path / ".co" / "host.yaml").write_text(yaml)
    done = run_host_expecting_failure(tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert_no_traceback(out)
    lines = [line for line in out.splitlines() if "host.yaml" in line]
    assert len(lines) == 1 and key_line in lines[0], out


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


@pytest.mark.parametrize(
    ("yaml", "needle"),
    [
        ("port: [unclosed\n  : : :\n", "host.yaml: not valid YAML"),
        ("- just\n- a list\n", "host.yaml: must be a mapping of settings"),
        (BOMB + "trust: *i\n", "host.yaml: YAML anchors and aliases are not allowed"),
    ],
    ids=["F6 not YAML", "F6 not a mapping", "F6 alias bomb"],
)
def test_f6_broken_host_yaml_is_a_clear_error(tmp_path, yaml, needle):
    (tmp_path / ".co").mkdir()
    (tmp_path / ".co" / "host.yaml").write_text(yaml)
    done = run_host_expecting_failure(tmp_path, timeout=30)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-2000:]
    assert needle in out and len(out) < 20_000, out[-2000:]
    assert_no_traceback(out)


def test_f5_unknown_key_warns_with_a_suggestion(tmp_path):
    (tmp_path / ".co").mkdir()
    (tmp_path / ".co" / "host.yaml").write_text("max_file_sise: 3\n")
    host = HostProcess(tmp_path).start()
    try:
        out = host.output()
        assert "unknown key 'max_file_sise'" in out and "did you mean 'max_file_size'?" in out, out
    finally:
        host.stop()


def test_f7_f8_damaged_jsonl_is_skipped_with_a_warning_and_records_stay_readable(tmp_path):
    host = HostProcess(tmp_path).start()
    try:
        first = httpx.post(host.url + "/input", json={"prompt": "calculate 6*7"}, timeout=30).json()["session_id"]
    finally:
        host.stop()
    jsonl = tmp_path / ".co" / "session_results.jsonl"
    with open(jsonl, "ab") as fh:
        fh.write(b"\x00\xff\xfe binary junk\n")  # F8 binary junk
        fh.write(b"[1, 2, 3]\n")  # F8 not an object
        fh.write(b'"just a string"\n')  # F8 not an object
        fh.write(b'{"no_session_id": true}\n')  # F8 no session_id
        fh.write(b'{"session_id": "' + first.encode() + b'", "sta')  # F7 torn last line
    host = HostProcess(tmp_path).start()
    try:
        record = httpx.get(f"{host.url}/sessions/{first}", timeout=10)
        assert record.status_code == 200 and record.json()["status"] == "done", record.text
        listing = httpx.get(host.url + "/sessions", timeout=10)
        assert listing.status_code == 200
        second = httpx.post(host.url + "/input", json={"prompt": "calculate 1+2"}, timeout=30)
        assert second.status_code == 200
        assert httpx.get(f"{host.url}/sessions/{second.json()['session_id']}", timeout=10).status_code == 200
        assert "skipped" in host.output() and "session_results.jsonl" in host.output(), host.output()
    finally:
        host.stop()
    # the next record started on a new line: every line after the torn one parses again
    lines = jsonl.read_bytes().splitlines()
    assert json.loads(lines[-1])["session_id"] == second.json()["session_id"]
