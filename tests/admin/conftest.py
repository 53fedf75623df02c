"""Module-scoped real hosts with admin secrets set to canary values (start-up is the slow part)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HostProcess

API_KEY = "canary-openonion-key-7f3a9c2e51"
ADMIN_TOKEN = "canary-admin-token-b81d04e6aa"
SECRET_KEY = "canary-django-secret-" + "x9" * 20
SECRETS_ENV = {"OPENONION_API_KEY": API_KEY, "CONNECTONION_ADMIN_TOKEN": ADMIN_TOKEN, "DJANGO_SECRET_KEY": SECRET_KEY}


@pytest.fixture(scope="module")
def module_host(tmp_path_factory) -> Iterator:
    started: list[HostProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, prepare=None) -> HostProcess:
        folder: Path = tmp_path_factory.mktemp("project")
        if prepare is not None:
            prepare(folder)
        host = HostProcess(folder, *args, env=env).start()
        started.append(host)
        return host

    yield start
    for host in started:
        host.stop()
