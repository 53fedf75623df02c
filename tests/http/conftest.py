"""Module-scoped real hosts: one server process shared by the tests of a module (start-up is the slow part)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import HostProcess


@pytest.fixture(scope="module")
def module_hosts(tmp_path_factory) -> Iterator:
    started: list[HostProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, name: str = "project",
              files: dict[str, str] | None = None) -> HostProcess:
        folder = tmp_path_factory.mktemp(name)
        for rel, text in (files or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
        host = HostProcess(folder, *args, env=env).start()
        started.append(host)
        return host

    yield start
    for host in started:
        host.stop()


@pytest.fixture(scope="module")
def demo(module_hosts) -> HostProcess:
    return module_hosts()
