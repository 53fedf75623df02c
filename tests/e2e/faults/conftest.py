"""Fault-injection helpers (HARDENING §4): an own Redis to kill, a small tmpfs to fill, JSONL checks.

Every helper works on real processes. The shared Redis on 127.0.0.1:6379 is never touched: the fault tests
start a throwaway ``redis-server`` on a free port and kill or stop only that one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

TERMINAL = ("done", "failed", "error", "interrupted", "cancelled")


def jsonl(project: Path) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Every record of ``.co/session_results.jsonl`` read straight from the file, plus unparseable lines."""
    path = project / ".co" / "session_results.jsonl"
    good: list[dict[str, Any]] = []
    bad: list[bytes] = []
    if not path.exists():
        return good, bad
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            bad.append(raw)
            continue
        if isinstance(record, dict) and isinstance(record.get("session_id"), str):
            good.append(record)
        else:
            bad.append(raw)
    return good, bad


def statuses(project: Path) -> dict[str, list[str]]:
    """Per session id, the statuses of its lines in file order."""
    out: dict[str, list[str]] = {}
    for record in jsonl(project)[0]:
        out.setdefault(record["session_id"], []).append(record.get("status", ""))
    return out


def terminal_counts(project: Path) -> Counter[str]:
    return Counter(sid for sid, seq in statuses(project).items() for s in seq if s in TERMINAL)


def healthy(url: str, timeout: float = 10.0) -> bool:
    """``/health`` answers 200 (how fast is bench's figure, not a test's assertion)."""
    response = httpx.get(url + "/health", timeout=timeout)
    assert response.status_code == 200, response.text
    return True


class Tmpfs:
    """A small tmpfs mounted at ``path`` (root only); ``fill``/``free`` and read-only remounts."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.mounted = False

    def mount(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
        self.mounted = True
        return self

    def fill(self) -> Path:
        """Fill the filesystem to the last byte with one ballast file."""
        ballast = self.path / "ballast"
        fd = os.open(ballast, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):  # big chunks, then down to the last byte
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size) == size:
                        pass
        finally:
            os.close(fd)
        return ballast

    def free(self) -> None:
        (self.path / "ballast").unlink(missing_ok=True)

    def read_only(self, on: bool) -> None:
        """Make every file and folder immutable (``chattr -R +i``), or writable again.

        Root ignores file modes, and ``mount -o remount,ro`` is refused (EBUSY) while SQLite holds its files
        open for writing; tmpfs honours the immutable flag (Linux ≥ 6.0), so every new open for writing or
        creating fails with EPERM, as it would with EROFS. Files already open stay writable.
        """
        done = subprocess.run(["chattr", "-R", "+i" if on else "-i", str(self.path)], capture_output=True, text=True)
        if on and done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")

    def unmount(self) -> None:
        if self.mounted:
            self.read_only(False)
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


@pytest.fixture
def co_tmpfs(project: Path) -> Iterator[Tmpfs]:
    """``<project>/.co`` on a 2 MiB tmpfs, unmounted afterwards (after the test's host has stopped)."""
    fs = Tmpfs(project / ".co", "2m").mount()
    yield fs
    fs.unmount()
