"""Uploads (PROTOCOL §6): check images and files against the limits, save files under ``.co/uploads``.

Every transport calls ``parse_uploads`` on the signed payload before a turn starts; the turn then saves the
files with ``save_files`` and hands the agent ``image_content`` and ``reminder_message``.
"""

from __future__ import annotations

import binascii
import contextlib
import logging
import os
import re
import secrets
import stat
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import StorageUnavailable, UploadRejected

logger = logging.getLogger(__name__)

MB = 1024 * 1024
NAME_MAX_BYTES = 255
FALLBACK_NAME = "upload"

# Types a vision model accepts as an image_url and whose magic bytes we can check. HEIC/HEIF/AVIF are left
# out: OpenAI and Anthropic refuse them, so accepting one would only move the 400 into a failed turn.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")
_IMAGE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-ms-bmp": "image/bmp"}

_CHUNK_CHARS = MB  # base64 characters decoded at a time (a multiple of 4): 768 KiB of bytes
_HEADER_MAX = 256  # the comma ending "data:<type>;base64," must come within this many characters
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+\-]*/[a-z0-9][a-z0-9!#$&^_.+\-]*")
# Characters that could break a line or reorder text where a name is shown (\n, \r, U+2028, U+202E, ...).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Windows-reserved and HTML characters (a name can never close the reminder's tag), and the two that
# expand inside a double-quoted shell word, in case the agent pastes the path into a command.
_RESERVED = str.maketrans(dict.fromkeys('<>:"|?*$`', "_"))
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)
_MAX_EXT_BYTES = 32
_NUMBERED_TRIES = 99


@dataclass(frozen=True)
class ImageInput:
    """An accepted image: its checked media type, a canonical base64 data URL, its decoded size in bytes."""

    media_type: str
    data_url: str = field(repr=False)
    size: int


@dataclass(frozen=True, init=False)
class FileInput:
    """An accepted file: the client's name, the data URL's media type (None for bare base64), its decoded
    size in bytes, and ``b64``, the base64 text alone.

    Built as ``FileInput(name, media_type, b64, size)``; ``parse_uploads`` passes the text as sent instead
    (a data URL, with ``start`` where its base64 begins), kept as ``source``, so that a 10 MiB upload is not
    copied; ``save_files`` decodes it from there.
    """

    name: str
    media_type: str | None
    size: int
    source: str = field(repr=False)
    start: int = 0

    def __init__(self, name: str, media_type: str | None, b64: str, size: int, *, start: int = 0) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "media_type", media_type)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "source", b64)
        object.__setattr__(self, "start", start)

    @property
    def b64(self) -> str:
        """The base64 text (a copy when it sits inside a data URL)."""
        return self.source[self.start :] if self.start else self.source


@dataclass(frozen=True)
class SavedFile:
    """A file written by ``save_files``: the name it was stored under and its absolute path."""

    name: str
    path: Path


# --- checking ---------------------------------------------------------------------------------------------


def parse_uploads(
    images: object, files: object, *, max_file_size_mb: int, max_files: int
) -> tuple[list[ImageInput], list[FileInput]]:
    """Check a request's ``images`` and ``files`` (None means none) and return them ready to use.

    Order: shapes, then the four limits of PROTOCOL §6.2 (sizes taken from the base64 length, nothing
    decoded yet), then each image and each file. Raises ``UploadRejected`` with the exact text, and
    nothing else, for any JSON value.
    """
    image_texts, file_items = _check_shapes(images, files)
    _check_limits(image_texts, file_items, max_file_size_mb=max_file_size_mb, max_files=max_files)
    accepted_images = [_check_image(index, text) for index, text in enumerate(image_texts)]
    accepted_files = [_check_file(index, item) for index, item in enumerate(file_items)]
    return accepted_images, accepted_files


def _check_shapes(images: object, files: object) -> tuple[list[str], list[dict]]:
    images = [] if images is None else images
    files = [] if files is None else files
    if not isinstance(images, list) or not all(isinstance(item, str) for item in images):
        raise UploadRejected("images must be a list of strings")
    if not isinstance(files, list) or not all(isinstance(item, dict) for item in files):
        raise UploadRejected("files must be a list of objects")
    for index, item in enumerate(files):
        for key in ("name", "data"):
            if item.get(key) is None:
                raise UploadRejected(f"files[{index}].{key} required")
        for key in ("name", "data"):
            if not isinstance(item[key], str):
                raise UploadRejected(f"files[{index}].{key} must be a string")
    return images, files


def _check_limits(images: list[str], files: list[dict], *, max_file_size_mb: int, max_files: int) -> None:
    limit = max_file_size_mb * MB
    hint_count = "Increase max_files_per_request in host.yaml"
    hint_size = "Increase max_file_size in host.yaml"
    if len(files) > max_files:
        raise UploadRejected(f"Too many files: {len(files)} (max: {max_files}). {hint_count}")
    for item in files:
        size = _estimated_size(item["data"])
        if size > limit:
            shown = _shown(item["name"])
            raise UploadRejected(
                f"File too large: {shown} ({size / MB:.1f}MB, max: {max_file_size_mb}MB). {hint_size}"
            )
    if len(images) > max_files:
        raise UploadRejected(f"Too many images: {len(images)} (max: {max_files}). {hint_count}")
    for index, text in enumerate(images):
        size = _estimated_size(text)
        if size > limit:
            raise UploadRejected(
                f"Image too large: image {index} ({size / MB:.1f}MB, max: {max_file_size_mb}MB). {hint_size}"
            )


def _check_image(index: int, text: str) -> ImageInput:
    not_base64 = UploadRejected(f"invalid base64 in image {index}")
    if _is_data_url(text):
        header = _data_url_header(text)
        if header is None:
            raise not_base64
        declared, is_base64, start = header
        declared = _IMAGE_ALIASES.get(declared, declared)
        if not declared:
            raise UploadRejected(f"image {index} must be a base64 data URL with a media type")
        if declared not in IMAGE_TYPES:
            raise UploadRejected(f"unsupported image type: {_shown(declared)}")
        if not is_base64:
            raise UploadRejected(f"image {index} must be a base64 data URL with a media type")
    elif _SCHEME.match(text):
        # http:, file:, ftp: ... would make the model provider (or a tool) fetch a URL for us (SSRF).
        raise UploadRejected("images must be data URLs")
    else:
        declared, start = None, 0
    try:
        head, size = _validate_base64(text, start)
    except ValueError:
        raise not_base64 from None
    if size == 0:
        raise not_base64
    actual = _sniff_image(head)
    if declared is None and actual is None:
        raise UploadRejected(f"image {index} is not a valid image (png, jpeg, gif, webp or bmp)")
    if declared is not None and actual != declared:
        raise UploadRejected(f"image {index} is not a valid {declared}")
    media_type = declared or actual
    prefix = f"data:{media_type};base64,"
    data_url = text if text.startswith(prefix) else prefix + text[start:]
    return ImageInput(media_type=media_type, data_url=data_url, size=size)


def _check_file(index: int, item: dict) -> FileInput:
    name, text = item["name"], item["data"]
    sanitize_filename(name)  # a NUL in the name is refused here, before anything is written
    media_type: str | None = None
    start = 0
    if _is_data_url(text):
        header = _data_url_header(text)
        if header is None:
            raise UploadRejected(f"invalid base64 in files[{index}]")
        media_type, is_base64, start = header
        if not is_base64 or not _MEDIA_TYPE.fullmatch(media_type):
            raise UploadRejected(f"files[{index}].data must be a base64 data URL with a media type")
    try:
        _, size = _validate_base64(text, start)
    except ValueError:
        raise UploadRejected(f"invalid base64 in files[{index}]") from None
    return FileInput(name, media_type, text, size, start=start)


def _is_data_url(text: str) -> bool:
    return text[:5].lower() == "data:"


def _data_url_header(text: str) -> tuple[str, bool, int] | None:
    """``(media type lower-cased, has ;base64, index of the payload)``, or None without a comma."""
    comma = text.find(",", 5, 5 + _HEADER_MAX)
    if comma < 0:
        return None
    media_type, *params = text[5:comma].split(";")
    is_base64 = bool(params) and params[-1].strip().lower() == "base64"
    return media_type.strip().lower(), is_base64, comma + 1


def _estimated_size(text: str) -> int:
    """Decoded size from the base64 length (× 3/4 minus padding), without decoding or copying."""
    start = 0
    if _is_data_url(text):
        comma = text.find(",", 5, 5 + _HEADER_MAX)
        start = comma + 1 if comma >= 0 else 5
    length = len(text) - start
    padding = (length >= 1 and text[-1] == "=") + (length >= 2 and text[-2] == "=")
    return max(0, length * 3 // 4 - padding)


def _decode_chunks(text: str, start: int = 0) -> Iterator[bytes]:
    """Decode ``text[start:]`` strictly, a chunk at a time; raises ``ValueError`` when it is not base64.

    Strict: the base64 alphabet only (no whitespace), a length that is a multiple of 4, at most two ``=``
    and only at the very end (``b64decode(validate=True)`` would also let surplus padding through).
    """
    length = len(text) - start
    if length % 4 or text.endswith("==="):
        raise binascii.Error("bad length or padding")
    for pos in range(start, len(text), _CHUNK_CHARS):
        chunk = text[pos : pos + _CHUNK_CHARS]
        if pos + _CHUNK_CHARS < len(text) and chunk.endswith("="):
            raise binascii.Error("padding before the end")
        yield binascii.a2b_base64(chunk, strict_mode=True)


def _validate_base64(text: str, start: int) -> tuple[bytes, int]:
    """The first decoded bytes (for magic-byte checks) and the exact decoded size."""
    head, size = b"", 0
    for chunk in _decode_chunks(text, start):
        if not head:
            head = chunk[:32]
        size += len(chunk)
    return head, size


def _sniff_image(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    # "BM" alone is too weak (text starts with it), so also require a known DIB header size.
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"
    return None


def _shown(text: str, limit: int = 100) -> str:
    """``text`` safe to put in one line of an error or a prompt: unsafe characters escaped, long text cut."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


# --- names ------------------------------------------------------------------------------------------------


def sanitize_filename(name: str) -> str:
    """The name a file is stored under: the last path component, without control or bidi characters,
    reserved characters replaced by ``_``, at most 255 UTF-8 bytes keeping the extension; ``upload`` when
    nothing (or only dots) is left. Raises ``UploadRejected("invalid file name")`` for a NUL.
    """
    if "\x00" in name:
        raise UploadRejected("invalid file name")
    base = name[max(name.rfind("/"), name.rfind("\\")) + 1 :]
    if len(base) > 4 * NAME_MAX_BYTES:  # bound the work on a hostile name; keep its start and extension
        base = base[: 2 * NAME_MAX_BYTES] + base[-_MAX_EXT_BYTES:]
    base = "".join(c for c in base if unicodedata.category(c) not in _UNSAFE_CATEGORIES)
    base = base.translate(_RESERVED).strip()
    if not base.strip("."):
        return FALLBACK_NAME
    stem, ext = _split_extension(base)
    fitted = _fit(stem, ext)
    return fitted if fitted.strip(".") else FALLBACK_NAME


def _split_extension(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot > 0 and len(name) - dot > 1 and len(name[dot:].encode()) <= _MAX_EXT_BYTES:
        return name[:dot], name[dot:]
    return name, ""


def _fit(stem: str, suffix: str) -> str:
    """``stem + suffix`` within NAME_MAX_BYTES, cutting the stem on a character boundary."""
    budget = NAME_MAX_BYTES - len(suffix.encode())
    raw = stem.encode()
    if len(raw) > budget:
        stem = raw[:budget].decode(errors="ignore")
    return stem + suffix


def _candidates(name: str) -> Iterator[str]:
    """``a.txt``, ``a-1.txt`` … ``a-99.txt``, then random suffixes: every one within NAME_MAX_BYTES."""
    yield name
    stem, ext = _split_extension(name)
    for number in range(1, _NUMBERED_TRIES + 1):
        yield _fit(stem, f"-{number}{ext}")
    for _ in range(100):
        yield _fit(stem, f"-{secrets.token_hex(4)}{ext}")


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
    for candidate in _candidates(name):
        try:
            fd = os.open(candidate, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free name for {name!r}")
    try:
        try:
            for chunk in _decode_chunks(text, start):
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
            logger.warning("cannot remove old upload %s: %s", _shown(entry.name), exc)
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
    paths = "\n".join(f"- {_shown(agent_path(item.path), limit=4096)}" for item in saved)
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
