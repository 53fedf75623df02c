"""Shared fixtures: a throwaway project folder, free ports, and a real host process on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "manage.py"
# For hosts a test drives from one loopback address harder than the default turn limits allow (catalogues,
# bursts of concurrent turns): the test's subject is something else, so it says so explicitly.
NO_TURN_LIMITS = ("--rate-limit-per-minute", "0", "--max-turns-per-identity", "0", "--max-turns-per-ip", "0")


def redis_up(address: tuple[str, int] = ("127.0.0.1", 6379)) -> bool:
    """Whether a Redis answers PING there (tests that need it skip, with that reason, when not)."""
    try:
        with socket.create_connection(address, timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNECTONION_", "OPENONION_", "AGENT_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["AGENT_CONFIG_PATH"] = env.get("CO_TEST_MACHINE_DIR", "/nonexistent-machine-dir")
    env.update(extra)
    return env


class ServerProcess:
    """A server started as its own process group, logging to a file, ready when a URL answers 200."""

    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    stop_timeout: float = 20

    def launch(self, cmd: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, ready_url: str,
               timeout: float, what: str, mode: str = "w", poll: float = 0.1) -> None:
        self.log_path = log_path
        self._log = open(log_path, mode)  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    return
            time.sleep(poll)
        self.stop()
        raise RuntimeError(f"{what} did not become ready in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self._log.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class HostProcess(ServerProcess):
    """``manage.py runhost`` in a project folder, on a free loopback port."""

    def __init__(self, project: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None,
                 ready_path: str = "/health") -> None:
        self.project = project
        self.port = port or free_port()
        self.args = list(args)
        self.env = host_env(**(env or {}))
        self.ready_path = ready_path
        self.log_path = project / "host-output.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 40) -> HostProcess:
        cmd = [sys.executable, str(MANAGE), "runhost", *self.args, "--port", str(self.port)]
        if "--relay-url" not in self.args:
            cmd.append("--no-relay")
        self.launch(cmd, cwd=self.project, env=self.env, log_path=self.project / "host-output.log",
                    ready_url=self.url + self.ready_path, timeout=timeout, what="host")
        return self


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty user project folder (its ``.co/`` is created by the host)."""
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def start_host(project: Path) -> Iterator:
    started: list[HostProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, folder: Path | None = None, **kw) -> HostProcess:
        host = HostProcess(folder or project, *args, env=env, **kw).start()
        started.append(host)
        return host

    yield start
    for host in started:
        host.stop()
        if os.environ.get("CO_TEST_SHOW_HOST_OUTPUT"):
            print(host.output())


@pytest.fixture(scope="module")
def module_hosts(tmp_path_factory) -> Iterator:
    """Hosts shared by a whole test module, each in its own folder (``files``/``yaml`` written first)."""
    started: list[HostProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, name: str = "project",
              files: dict[str, str] | None = None, yaml: str | None = None, prepare=None) -> HostProcess:
        folder = tmp_path_factory.mktemp(name)
        if yaml is not None:
            files = {**(files or {}), ".co/host.yaml": yaml}
        for rel, text in (files or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
        if prepare is not None:
            prepare(folder)
        host = HostProcess(folder, *args, env=env).start()
        started.append(host)
        return host

    yield start
    for host in started:
        host.stop()


@pytest.fixture
def demo_host(start_host) -> HostProcess:
    return start_host()
