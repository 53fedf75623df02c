"""Hostile-input catalogue helpers (HARDENING §0): module-scoped real hosts and the invariants I1-I3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NO_TURN_LIMITS, HostProcess

SMALL_CAP_YAML = "max_file_size: 1\nmax_files_per_request: 1\n"
WS_CAP_YAML = "max_request_mb: 0.01\n"


def _start(tmp_path_factory, name: str, yaml: str | None) -> HostProcess:
    folder = tmp_path_factory.mktemp(name)
    if yaml is not None:
        (folder / ".co").mkdir()
        (folder / ".co" / "host.yaml").write_text(yaml)
    return HostProcess(folder, *NO_TURN_LIMITS).start()  # each catalogue fires dozens of inputs at once


@pytest.fixture(scope="module")
def small_host(tmp_path_factory) -> Iterator[HostProcess]:
    """The demo agent with a small body cap (1 file of 1 MB -> about 3.7 MB)."""
    host = _start(tmp_path_factory, "small", SMALL_CAP_YAML)
    yield host
    host.stop()


@pytest.fixture(scope="module")
def big_host(tmp_path_factory) -> Iterator[HostProcess]:
    """The demo agent with default caps (room for a 20 MB prompt and a 17 MB session)."""
    host = _start(tmp_path_factory, "big", None)
    yield host
    host.stop()


@pytest.fixture(scope="module")
def ws_host(tmp_path_factory) -> Iterator[HostProcess]:
    """The demo agent with a 10 KiB message cap, under daphne's 1 MiB transport cap."""
    host = _start(tmp_path_factory, "ws", WS_CAP_YAML)
    yield host
    host.stop()


class Snapshot:
    """What a rejected request must leave untouched (I2) and what must still hold afterwards (I3)."""

    def __init__(self, host: HostProcess) -> None:
        self.host = host
        self.co = host.project / ".co"
        self.jsonl_bytes = self._jsonl_size()
        self.uploads = self._uploads()

    def _jsonl_size(self) -> int:
        path = self.co / "session_results.jsonl"
        return path.stat().st_size if path.exists() else 0

    def _uploads(self) -> set[str]:
        folder = self.co / "uploads"
        return {p.name for p in folder.iterdir()} if folder.exists() else set()

    def assert_nothing_recorded(self) -> None:
        assert self._jsonl_size() == self.jsonl_bytes, "a rejected request added JSONL lines"
        assert self._uploads() == self.uploads, "a rejected request left files in .co/uploads"

    def assert_healthy(self) -> None:
        assert httpx.get(self.host.url + "/health", timeout=5).status_code == 200
        path = self.co / "session_results.jsonl"
        if path.exists():
            for number, line in enumerate(path.read_bytes().splitlines(), 1):
                if line.strip():
                    assert isinstance(json.loads(line), dict), f"JSONL line {number} is not an object"


def assert_clean_body(response: httpx.Response) -> None:
    """I1: no 5xx, JSON (never HTML), no traceback or file path in the body."""
    assert response.status_code < 500, response.text[:300]
    text = response.text
    lowered = text.lower()
    assert "<html" not in lowered and "<!doctype" not in lowered, text[:300]
    assert "traceback" not in lowered and 'file "/' not in lowered, text[:300]
    if response.status_code >= 400 and text:
        assert len(response.content) <= 1024, text[:300]
        assert isinstance(response.json(), dict)


def error_of(response: httpx.Response) -> str | None:
    return response.json().get("error") if response.content else None


def project_path(host: HostProcess) -> Path:
    return host.project
