"""Shared fixtures: a throwaway project folder, free ports, and a real host process on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_model import FakeModel, serve_model
from tests.support.hosts import MANAGE, NO_TURN_LIMITS, REPO, HostProcess, OwnRedis, ServerProcess, host_env, stop_all
from tests.support.net import free_port, redis_up, share_httpx_ssl_context

share_httpx_ssl_context()  # every test process: httpx's default SSL context built once, not once per call

__all__ = ["MANAGE", "NO_TURN_LIMITS", "REPO", "HostProcess", "ServerProcess", "free_port", "host_env", "redis_up"]


# Folders whose files run longest (real processes, restarts, outages), handed to the xdist workers first so
# that no long file starts last and keeps one worker busy after the others are done. Files keep their order
# inside; everything else follows in collection order.
LONG_FIRST = (
    "replicas",
    "scale",
    "faults",
    "serving",
    "docs",
    "relay",
    "hostile",
    "trust",
    "conversation",
    "web",
    "observability",
    "sessions_app",
    "ws",
    "uploads",
    "limits",
    "ui",
)


@pytest.hookimpl(tryfirst=True)  # before pytest-django's own (stable) ordering by database use
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        folders = Path(str(item.path)).relative_to(REPO / "tests").parts[:-1]
        return min((LONG_FIRST.index(f) for f in folders if f in LONG_FIRST), default=len(LONG_FIRST))

    items.sort(key=rank)


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
    stop_all(started)
    if os.environ.get("CO_TEST_SHOW_HOST_OUTPUT"):
        for host in started:
            print(host.output())


@pytest.fixture(scope="module")
def module_hosts(tmp_path_factory) -> Iterator:
    """Hosts shared by a whole test module, each in its own folder (``files``/``yaml`` written first)."""
    started: list[HostProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        name: str = "project",
        files: dict[str, str] | None = None,
        yaml: str | None = None,
        prepare=None,
    ) -> HostProcess:
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
    stop_all(started)


@pytest.fixture
def demo_host(start_host) -> HostProcess:
    return start_host()


@pytest.fixture
def fake_model() -> Iterator[FakeModel]:
    """A loopback OpenAI-compatible model (``tests.support.fake_model``) answering ACCEPT unless told."""
    with serve_model() as model:
        yield model


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A ``redis-server`` of this test's own, which it may kill, pause or restart."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = OwnRedis(folder).start()
    yield server
    server.stop()
