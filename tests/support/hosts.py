"""Real servers on loopback for the tests: any server as its own process group (ServerProcess),
``manage.py runhost`` in a project folder (HostProcess), ``manage.py runrelay`` (RelayProcess) and a throwaway
``redis-server`` that a test may kill (OwnRedis)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.net import free_port, redis_up
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
MANAGE = REPO / "manage.py"
# For hosts a test drives from one loopback address harder than the default turn limits allow (catalogues,
# bursts of concurrent turns): the test's subject is something else, so it says so explicitly.
NO_TURN_LIMITS = ("--rate-limit-per-minute", "0", "--max-turns-per-identity", "0", "--max-turns-per-ip", "0")


def same_python_flags(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus what makes a spawned Python run as this one does: ``-X dev`` (PYTHONDEVMODE) and the ``-W``
    filters (PYTHONWARNINGS), so ``python -X dev -W error::ResourceWarning -m pytest`` checks the servers the
    tests start as well as the test process."""
    if sys.flags.dev_mode:
        env["PYTHONDEVMODE"] = "1"
    if sys.warnoptions:
        env["PYTHONWARNINGS"] = ",".join(sys.warnoptions)
    return env


def host_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNECTONION_", "OPENONION_", "AGENT_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["AGENT_CONFIG_PATH"] = env.get("CO_TEST_MACHINE_DIR", "/nonexistent-machine-dir")
    env.update(extra)
    return same_python_flags(env)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal ``proc``'s process group and reap it, killing the group if it outlives ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def stop_all(servers: list[ServerProcess]) -> None:
    """Stop several servers at once: signal each one's process group, then reap them (killing a group that
    outlives its ``stop_timeout``), so that their shutdowns overlap instead of adding up."""
    running = [s for s in servers if s.proc is not None and s.proc.poll() is None]
    for server in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGTERM)
    started = time.monotonic()
    for server in running:
        try:
            server.proc.wait(timeout=max(0.0, started + server.stop_timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=5)


class Loopback:
    """The URLs of a server at ``ip``:``port`` (a subclass bound elsewhere sets ``ip``)."""

    ip = "127.0.0.1"
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.ip}:{self.port}/ws"


class ServerProcess:
    """A server started as its own process group, logging to a file, ready when a URL answers 200."""

    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    stop_timeout: float = 20

    def spawn(self, cmd: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, mode: str = "w") -> None:
        """Start ``cmd`` as its own process group, its output going to ``log_path`` (no readiness check)."""
        self.log_path = log_path
        with open(log_path, mode) as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )

    def launch(
        self,
        cmd: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        ready_url: str,
        timeout: float,
        what: str,
        mode: str = "w",
        poll: float = 0.05,
    ) -> None:
        """:meth:`spawn`, then wait until ``ready_url`` answers 200 (failing with the output if it exits)."""
        self.spawn(cmd, cwd=cwd, env=env, log_path=log_path, mode=mode)
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

    def wait_for_output(self, text: str, timeout: float = 30) -> str:
        """The server's output once it contains ``text`` (a line it prints after it answers, say)."""
        deadline = time.monotonic() + timeout
        while text not in (out := self.output()):
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                raise AssertionError(f"{text!r} never appeared in the output:\n{out}")
            time.sleep(0.1)
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the process group and reap it (SIGKILL after ``stop_timeout``)."""
        if self.proc is not None:
            stop_group(self.proc, sig, self.stop_timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class HostProcess(Loopback, ServerProcess):
    """``manage.py runhost`` in a project folder, on a free loopback port."""

    def __init__(
        self,
        project: Path,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        ready_path: str = "/health",
    ) -> None:
        self.project = project
        self.port = port or free_port()
        self.args = list(args)
        self.env = host_env(**(env or {}))
        self.ready_path = ready_path
        self.log_path = project / "host-output.log"

    def start(self, timeout: float = 40) -> HostProcess:
        cmd = [sys.executable, str(MANAGE), "runhost", *self.args, "--port", str(self.port)]
        if "--relay-url" not in self.args:
            cmd.append("--no-relay")
        self.launch(
            cmd,
            cwd=self.project,
            env=self.env,
            log_path=self.project / "host-output.log",
            ready_url=self.url + self.ready_path,
            timeout=timeout,
            what="host",
        )
        if "--workers" in self.args:
            self.wait_for_workers(int(self.args[self.args.index("--workers") + 1]), timeout)
        return self

    def wait_for_workers(self, count: int, timeout: float = 40) -> None:
        """Block until every worker of ``--workers count`` has answered ``/health`` (each on a fresh connection,
        so the kernel hands them round): the first answer only proves that one worker is up."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while seen != set(range(count)):
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {sorted(set(range(count)) - seen)} never answered\n{self.output()}")
            try:
                seen.add(httpx.get(self.url + "/health", timeout=2, headers={"Connection": "close"}).json()["worker"])
            except httpx.HTTPError:
                time.sleep(0.05)

    def worker_pids(self) -> dict[int, int]:
        """``--workers N``: each worker's index (its ``CONNECTONION_WORKER``) to its pid."""
        import psutil

        pids = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                index = child.environ().get("CONNECTONION_WORKER")
                if index is not None and "hosting.serving.worker" in " ".join(child.cmdline()):
                    pids[int(index)] = child.pid
        return pids

    @contextlib.contextmanager
    def only_worker(self, index: int) -> Iterator[None]:
        """While inside, every other worker is paused (SIGSTOP), so the kernel can hand a new connection to
        ``index`` only: a test reaches the worker it means, with no search. The others resume on exit (the
        connections they already hold wait meanwhile, nothing is lost)."""
        pids = self.worker_pids()
        assert index in pids, f"no worker {index} among {sorted(pids)}"
        others = [pid for i, pid in pids.items() if i != index]
        try:
            for pid in others:
                os.kill(pid, signal.SIGSTOP)
            yield
        finally:
            for pid in others:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


class RelayProcess(ServerProcess):
    """``manage.py runrelay`` as a real process (daphne) on a free loopback port, logging into ``cwd``."""

    stop_timeout = 15

    def __init__(self, *args: str, port: int | None = None, cwd: Path | None = None) -> None:
        self.port = port or free_port()
        self.args = list(args)
        self.cwd = cwd

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> RelayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNECTONION_", "RELAY_", "AGENT_"))}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env["PYTHONPATH"] = str(REPO)
        env["CONNECTONION_HOST_ARGS"] = json.dumps({"project_dir": str(self.cwd), "relay_url": None})
        same_python_flags(env)
        cmd = [sys.executable, str(MANAGE), "runrelay", "--port", str(self.port), *self.args]
        assert self.cwd is not None
        self.launch(
            cmd,
            cwd=self.cwd,
            env=env,
            log_path=self.cwd / f"relay-{self.port}.log",
            ready_url=self.http + "/health",
            timeout=timeout,
            what="relay",
            mode="a",
        )
        return self


def wait_listed(relay_http: str, address: str, timeout: float = 30) -> dict:
    """The relay's lookup entry for ``address`` (``GET /api/agents/<address>`` on ``relay_http``) once the
    agent is listed there."""

    def lookup() -> dict | None:
        reply = httpx.get(f"{relay_http}/api/agents/{address}", timeout=2)
        return reply.json() if reply.status_code == 200 else None

    return wait_for(lookup, timeout, f"{address} listed on the relay", interval=0.1, ignore=(httpx.HTTPError,))


class OwnRedis:
    """A throwaway ``redis-server`` on a free loopback port that tests may kill, stop and restart (the shared
    Redis on 6379 is never touched)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        import pytest

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (this test needs a Redis of its own to kill or restart)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self.ping, 10, "own redis-server answers PING")
        return self

    def restart(self) -> None:
        """A fresh, empty server on the same port (after ``kill``)."""
        self.kill()
        self.start()

    def ping(self) -> bool:
        return redis_up(("127.0.0.1", self.port))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.kill()
