"""Uploads once a turn starts (PROTOCOL §6): the checked files (``hosting.core.upload_input``) saved under
``.co/uploads`` with safe, unique names (``hosting.core.filenames``), old ones purged, and what the agent is given (``image_content``,
``reminder_message``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import StorageUnavailable, UploadRejected
from hosting.core.filenames import candidates, sanitize_filename
from hosting.core.upload_input import MB, FileInput, ImageInput, decode_chunks, displayable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedFile:
    """A file written by ``save_files``: the name it was stored under and its absolute path."""

    name: str
    path: Path


# --- saving -----------------------------------------------------------------------------------------------


def save_files(files: list[FileInput], uploads_dir: Path) -> list[SavedFile]:
    """Decode and write each file into ``uploads_dir`` (created 0700) as a new 0600 file, never replacing
    anything (``a.txt`` taken → ``a-1.txt``), in order.

    All or nothing: when one write fails, the files written by this call are removed and
    ``StorageUnavailable`` is raised for an ``OSError`` (disk full, permissions), ``UploadRejected`` for
    base64 that does not decode. Only one chunk of decoded bytes is held in memory at a time.
    """
    if not files:
        return []
    try:
        directory = _prepare_directory(uploads_dir)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        logger.error("uploads directory %s unusable: %s", uploads_dir, exc)
        raise StorageUnavailable() from exc
    saved: list[SavedFile] = []
    try:
        for index, item in enumerate(files):
            try:
                stored = _write_new_file(dir_fd, sanitize_filename(item.name), item.source, item.start)
            except ValueError:
                raise UploadRejected(f"invalid base64 in files[{index}]") from None
            saved.append(SavedFile(name=stored, path=directory / stored))
    except BaseException as exc:
        for done in saved:
            with contextlib.suppress(OSError):
                os.unlink(done.name, dir_fd=dir_fd)
        if isinstance(exc, OSError):
            logger.error("saving uploads in %s failed: %s", directory, exc)
            raise StorageUnavailable() from exc
        raise
    finally:
        os.close(dir_fd)
    return saved


def _prepare_directory(uploads_dir: Path) -> Path:
    uploads_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = uploads_dir.resolve()
    if stat.S_IMODE(directory.stat().st_mode) != 0o700:
        directory.chmod(0o700)
    return directory


def _write_new_file(dir_fd: int, name: str, text: str, start: int) -> str:
    """Create a name not yet taken (O_EXCL: no overwrite; O_NOFOLLOW: no symlink), write, return it.

    The file is created relative to the directory's descriptor, so only ``name`` is looked up.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for candidate in candidates(name):
        try:
            fd = os.open(candidate, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free name for {name!r}")
    try:
        try:
            for chunk in decode_chunks(text, start):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(candidate, dir_fd=dir_fd)
        raise
    return candidate


def purge_old_uploads(uploads_dir: Path, *, older_than: float, now: float | None = None) -> int:
    """Remove files in ``uploads_dir`` last modified more than ``older_than`` seconds before ``now``
    (default: the current time); sub-directories are left alone. Returns how many were removed;
    a missing directory is 0, a file that cannot be removed is logged and skipped.
    """
    cutoff = (time.time() if now is None else now) - older_than
    removed = 0
    try:
        with os.scandir(uploads_dir) as listing:
            entries = list(listing)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        logger.warning("cannot list uploads directory %s: %s", uploads_dir, exc)
        return 0
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode) or info.st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            continue  # removed meanwhile by another worker's compaction
        except OSError as exc:
            logger.warning("cannot remove old upload %s: %s", displayable(entry.name), exc)
    return removed


# --- what the agent is given ------------------------------------------------------------------------------


def agent_path(path: Path) -> str:
    """The path the agent is told: relative to the process's working directory, where its file tools resolve a
    relative path (``.co/uploads/a.txt`` when the host runs in its project folder). The reminder is part of the
    conversation, which travels to the client (PROTOCOL §5.1), so it must not carry the server's absolute path
    (D16). Absolute only when there is no working directory to be relative to."""
    try:
        return os.path.relpath(path, os.getcwd())
    except (OSError, ValueError):
        return str(path)


def reminder_message(saved: list[SavedFile]) -> dict:
    """The internal message telling the agent which files arrived (Appendix B): one path per line, marked
    ``internal`` so it is not shown as user text. File bytes never go into the conversation."""
    paths = "\n".join(f"- {displayable(agent_path(item.path), limit=4096)}" for item in saved)
    text = (
        "The user uploaded these files (one path per line):\n"
        f"{paths}\n"
        "Read them with your file tools before you answer; do not guess their contents."
    )
    return {"role": "user", "content": f"<system-reminder>\n{text}\n</system-reminder>", "internal": True}


def client_file_list(saved: list[SavedFile]) -> list[dict]:
    """What a ``files_received`` event (and the session trace) tells the client: ``{name, path}`` per file
    (PROTOCOL §6.3), both the name the file was stored under. Never the server's absolute path (D16): the
    event goes to every door (HTTP, /ws, relay) and the trace travels back in the session."""
    return [{"name": item.name, "path": item.name} for item in saved]


def image_content(prompt: str, images: list[ImageInput]) -> list[dict]:
    """The user message's content for a prompt with images (PROTOCOL §6.1): text part, then image parts."""
    parts: list[dict] = [{"type": "text", "text": prompt}]
    parts.extend({"type": "image_url", "image_url": {"url": image.data_url}} for image in images)
    return parts


def max_request_bytes(max_file_size_mb: int, max_files: int) -> int:
    """PROTOCOL D24's one cap for HTTP bodies and WebSocket messages: ``max_files`` files and as many
    images, each at the size limit and base64-encoded (4 characters per started 3 bytes), plus 1 MiB for
    the prompt, session and JSON around them."""
    per_item = 4 * -(-int(max_file_size_mb * MB) // 3)
    return 2 * max_files * per_item + MB
