"""The JSONL file beneath the session store: its lock, reads at a place, torn tails, the line encoding.

One JSON object per line, appended whole under ``flock`` (``sessions_app.store`` is the only writer).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("connectonion.store")


class FileLock:
    """``flock`` on a side file, so compaction's rename never swaps the lock away from a writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


@contextlib.contextmanager
def opened(path: Path) -> Iterator[tuple[int, int] | None]:
    """``(fd, inode)`` of the results file opened for reading, or None when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd, os.fstat(fd).st_ino
    finally:
        os.close(fd)


def line_at(source: tuple[int, int] | None, where: tuple[int, int, int] | None) -> bytes | None:
    """The whole stored line at ``where`` (with its newline), or None when that file has been replaced since
    (another process compacted it) or removed, or the record was never written."""
    if source is None or where is None or where[0] != source[1]:
        return None
    line = os.pread(source[0], where[2], where[1])
    return line if len(line) == where[2] and line.endswith(b"\n") else None


def drop_torn_tail(fd: int, size: int, path: Path) -> int:
    """Cut an unterminated last line (a write that never returned: a crash or a full disk) under the lock.

    Writers append whole lines under ``flock``, so such a tail is never a write in progress; it is dropped
    rather than ended with a newline, which would revive a record whose write never returned (FI3).
    Returns the new size.
    """
    end = size
    while end > 0:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    log.warning("dropped an unfinished last line (%d bytes) in %s", size - end, path.name)
    return end


def encode(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode(
        "utf-8", "backslashreplace"
    )


def decode_data(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
        return None
    return data


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_lines(path: Path) -> Iterable[dict[str, Any]]:
    """Every parseable record of a JSONL file in order (for tools and tests)."""
    with open(path, "rb") as fh:
        for raw in fh:
            data = decode_data(raw)
            if data is not None:
                yield data


def append_lines(fd: int, size: int, lines: bytes, path: Path, *, tail_known: bool) -> tuple[int, int]:
    """One ``write`` of whole ``lines`` at the end of a file of ``size`` bytes, opened ``O_APPEND`` under the flock;
    returns (size before, bytes written). A torn last line is cut first unless the caller knows the file ends
    with a newline (``tail_known``); a short write is truncated back before the ``OSError`` is raised."""
    if size and not tail_known and os.pread(fd, 1, size - 1) != b"\n":
        size = drop_torn_tail(fd, size, path)
    written = 0
    try:
        written = os.write(fd, lines)
        if written != len(lines):
            raise OSError(errno.ENOSPC, "short write")
    except OSError:
        if written:  # disk full mid-batch: take the partial lines back, never leave one torn
            os.ftruncate(fd, size)
        raise
    return size, written
