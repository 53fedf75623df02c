"""Uploads as they arrive (PROTOCOL §6.2): the images and files of an input checked against the limits before
a turn starts. Every transport calls ``parse_uploads`` on the signed payload; what passes is an ``ImageInput``
or a ``FileInput`` (``hosting.core.uploads`` saves the files and gives the agent what it needs).
"""

from __future__ import annotations

import binascii
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

from common.errors import UploadRejected
from hosting.core.filenames import UNSAFE_CATEGORIES, sanitize_filename

MB = 1024 * 1024

# Types a vision model accepts as an image_url and whose magic bytes we can check. HEIC/HEIF/AVIF are left
# out: OpenAI and Anthropic refuse them, so accepting one would only move the 400 into a failed turn.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")
_IMAGE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-ms-bmp": "image/bmp"}

_CHUNK_CHARS = MB  # base64 characters decoded at a time (a multiple of 4): 768 KiB of bytes
_HEADER_MAX = 256  # the comma ending "data:<type>;base64," must come within this many characters
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+\-]*/[a-z0-9][a-z0-9!#$&^_.+\-]*")
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)


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
            shown = displayable(item["name"])
            raise UploadRejected(f"File too large: {shown} ({size / MB:.1f}MB, max: {max_file_size_mb}MB). {hint_size}")
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
            raise UploadRejected(f"unsupported image type: {displayable(declared)}")
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


def decode_chunks(text: str, start: int = 0) -> Iterator[bytes]:
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
    for chunk in decode_chunks(text, start):
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


def displayable(text: str, limit: int = 100) -> str:
    """``text`` safe to put in one line of an error or a prompt: unsafe characters escaped, long text cut."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in text)
