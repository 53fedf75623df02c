"""A released ``connectonion.Agent`` whose model cannot be reached: the user reads the cause, not "Unable to run agent"."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
from websockets.sync.client import connect

from tests.conftest import MANAGE, free_port, host_env

UNREACHABLE = """
def create_agent():
    from connectonion import Agent
    return Agent("offline", model="gpt-4o-mini", api_key="sk-test-not-a-key", max_iterations=1)
"""

NO_KEY = """
def create_agent():
    from connectonion import Agent
    return Agent("nokey")
"""


def test_unreachable_model_is_named_over_http_and_ws(module_hosts):
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: the model's API cannot be reached
    host = module_hosts(
        "modelagent:create_agent",
        files={"modelagent.py": UNREACHABLE},
        name="offline-model",
        env={"OPENAI_BASE_URL": closed},
    )
    r = httpx.post(host.url + "/input", json={"prompt": "hi"}, timeout=120)
    assert r.status_code == 503, r.text
    assert r.json()["error"].startswith("agent model unavailable: cannot connect to the model's API"), r.text
    with connect(host.ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "INPUT", "prompt": "hi"}))
        while (frame := json.loads(ws.recv(timeout=120)))["type"] not in ("OUTPUT", "ERROR"):
            pass
    assert frame["type"] == "ERROR" and frame["message"] == r.json()["error"], frame


def test_missing_api_key_stops_the_start_with_the_cause(tmp_path):
    (tmp_path / "nokey.py").write_text(NO_KEY)
    done = subprocess.run(
        [sys.executable, str(MANAGE), "runhost", "nokey:create_agent", "--no-relay", "--port", str(free_port())],
        cwd=tmp_path,
        env=host_env(HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "agent model unavailable: OPENONION_API_KEY is not set" in done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
