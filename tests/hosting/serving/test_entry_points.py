"""Every documented way to start the host, each from a user's own folder, as real processes."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, ServerProcess, free_port, host_env
from tests.support.ws import ws_turn_sync

MYAGENT = """
from hosting import host, create_app


class Greeter:
    name = "greeter"
    model = "user/greeter"
    tools = []

    def input(self, prompt: str) -> str:
        return "hello " + prompt


def create_agent():
    return Greeter()


if __name__ == "__main__":
    import sys
    host(create_agent, port=int(sys.argv[1]), relay_url=None)
"""

APP = MYAGENT + "\n\napp = create_app(create_agent, trust='open')\n"


@contextlib.contextmanager
def serve(cmd: list[str], folder: Path, port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """``cmd`` serving on ``port`` from ``folder`` (logging to serve.log); yields its URL, stops it after."""
    server = ServerProcess()
    url = f"http://127.0.0.1:{port}"
    server.launch(
        cmd,
        cwd=folder,
        env=host_env(**(env or {})),
        log_path=folder / "serve.log",
        ready_url=url + "/health",
        timeout=40,
        what=" ".join(cmd[1:3]),
    )
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "user-project"
    folder.mkdir()
    (folder / "myagent.py").write_text(APP)
    return folder


def assert_greets(url: str) -> None:
    body = httpx.post(url + "/input", json={"prompt": "Ada"}, timeout=30).json()
    assert body["status"] == "done" and body["result"] == "hello Ada"


def ws_turn(url: str, prompt: str) -> dict:
    return ws_turn_sync(url.replace("http://", "ws://") + "/ws", prompt, timeout=20)


def test_runhost_imports_the_users_module_from_cwd(user_folder):
    (user_folder / "myagent.py").write_text(MYAGENT)
    # The repo may hold its own .co/ (the README's first command runs the demo host there): it must not change.
    repo_results = REPO / ".co/session_results.jsonl"
    before = repo_results.read_bytes() if repo_results.exists() else None
    port = free_port()
    cmd = [
        sys.executable,
        str(REPO / "manage.py"),
        "runhost",
        "myagent:create_agent",
        "--no-relay",
        "--port",
        str(port),
    ]
    with serve(cmd, user_folder, port) as url:
        assert_greets(url)
        assert httpx.get(url + "/info").json()["name"] == "greeter"
    assert (user_folder / ".co/session_results.jsonl").is_file()
    assert (repo_results.read_bytes() if repo_results.exists() else None) == before


def test_python_myagent_py_calls_host(user_folder):
    (user_folder / "myagent.py").write_text(MYAGENT)
    port = free_port()
    with serve([sys.executable, "myagent.py", str(port)], user_folder, port) as url:
        assert_greets(url)
    banner = (user_folder / "serve.log").read_text()
    assert "greeter" in banner and "Waiting for tasks" in banner
    assert (user_folder / ".co/session_results.jsonl").is_file()


def test_create_app_served_by_uvicorn(user_folder):
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "myagent:app", "--port", str(port), "--log-level", "warning"]
    with serve(cmd, user_folder, port) as url:
        assert_greets(url)
        frame = ws_turn(url, "socket")
        assert frame["type"] == "OUTPUT", frame
        assert frame["result"] == "hello socket"


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_create_app_served_by_two_workers(user_folder, server):
    """Each worker imports ``myagent:app``; uvicorn --workers does so inside its running event loop."""
    port = free_port()
    if server == "uvicorn":
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "myagent:app",
            "--workers",
            "2",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "myagent:app",
            "-w",
            "2",
            "-k",
            "uvicorn.workers.UvicornWorker",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
    with serve(cmd, user_folder, port) as url:
        for i in range(4):  # fresh connections: the kernel may hand each to either worker
            with httpx.Client() as client:
                body = client.post(url + "/input", json={"prompt": f"p{i}"}, timeout=30).json()
                assert body["status"] == "done" and body["result"] == f"hello p{i}"
            frame = ws_turn(url, f"w{i}")
            assert frame["type"] == "OUTPUT" and frame["result"] == f"hello w{i}", frame
    assert "Traceback" not in (user_folder / "serve.log").read_text()


def test_daphne_serves_the_agent_named_by_env(user_folder):
    (user_folder / "myagent.py").write_text(MYAGENT)
    port = free_port()
    cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "connectonion_site.asgi:application"]
    env = {"CONNECTONION_AGENT": "myagent:create_agent", "PYTHONPATH": f"{REPO}{os.pathsep}{user_folder}"}
    with serve(cmd, user_folder, port, env=env) as url:
        assert_greets(url)
        frame = ws_turn(url, "daphne")
        assert frame["type"] == "OUTPUT" and frame["result"] == "hello daphne"


def test_daphne_defaults_to_the_demo_agent(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "connectonion_site.asgi:application"]
    with serve(cmd, tmp_path, port) as url:
        assert httpx.get(url + "/info").json()["name"] == "demo"


@pytest.mark.parametrize("server", ["runhost", "daphne"])
def test_host_importing_a_module_that_calls_create_app_serves_it(user_folder, server):
    """``app = create_app(create_agent)`` at import used to deadlock ``runhost myagent:create_agent``."""
    port = free_port()
    if server == "runhost":
        cmd = [
            sys.executable,
            str(REPO / "manage.py"),
            "runhost",
            "myagent:create_agent",
            "--no-relay",
            "--port",
            str(port),
        ]
        env = None
    else:
        cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "connectonion_site.asgi:application"]
        env = {"CONNECTONION_AGENT": "myagent:create_agent", "PYTHONPATH": f"{REPO}{os.pathsep}{user_folder}"}
    with serve(cmd, user_folder, port, env=env) as url:
        assert_greets(url)
        assert ws_turn(url, "again")["result"] == "hello again"
