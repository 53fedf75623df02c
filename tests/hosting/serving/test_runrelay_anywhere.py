"""``python /path/to/manage.py runrelay`` from any folder, and its ``Relay on`` line only once it answers."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx

from tests.conftest import MANAGE, ServerProcess, free_port, host_env


def relay_env(tmp_path) -> dict[str, str]:
    env = host_env(HOME=str(tmp_path))
    env.pop("PYTHONPATH")  # a user's shell: the repository is not on the path
    return env


def test_runrelay_serves_from_another_folder(tmp_path):
    port = free_port()
    relay = ServerProcess()
    relay.launch(
        [sys.executable, str(MANAGE), "runrelay", "--port", str(port)],
        cwd=tmp_path,
        env=relay_env(tmp_path),
        log_path=tmp_path / "relay.log",
        ready_url=f"http://127.0.0.1:{port}/health",
        timeout=60,
        what="runrelay",
    )
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/api/agents/0xabc").status_code == 404
        # /health answers a moment before runrelay's own check of it prints the line: wait for the line.
        relay.wait_for_output(f"Relay on ws://127.0.0.1:{port}")
    finally:
        relay.stop()
    out = relay.output()
    assert "ModuleNotFoundError" not in out, out
    assert relay.proc.returncode == 0, out


def test_runrelay_says_it_failed_instead_of_relay_on_when_daphne_cannot_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(MANAGE), "runrelay", "--port", str(port)],
            cwd=tmp_path,
            env=relay_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert "Relay on" not in done.stdout
    assert "the relay did not start" in done.stderr, done.stdout + done.stderr
