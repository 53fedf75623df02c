"""Module-scoped real hosts: one server process shared by the tests of a module (start-up is the slow part)."""

from __future__ import annotations

import pytest

from tests.conftest import HostProcess


@pytest.fixture(scope="module")
def demo(module_hosts) -> HostProcess:
    return module_hosts()
