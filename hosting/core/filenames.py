"""Upload file names (PROTOCOL §6.2): the name a file is stored under, safe to show and to paste into a shell,
and the numbered alternatives tried when it is taken (``hosting.core.uploads`` saves under them)."""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterator

from common.errors import UploadRejected

NAME_MAX_BYTES = 255
FALLBACK_NAME = "upload"
# Characters that could break a line or reorder text where a name is shown (\n, \r, U+2028, U+202E, ...).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Windows-reserved and HTML characters (a name can never close the reminder's tag), and the two that
# expand inside a double-quoted shell word, in case the agent pastes the path into a command.
_RESERVED = str.maketrans(dict.fromkeys('<>:"|?*$`', "_"))
_MAX_EXT_BYTES = 32
_NUMBERED_TRIES = 99


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
    base = "".join(c for c in base if unicodedata.category(c) not in UNSAFE_CATEGORIES)
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


def candidates(name: str) -> Iterator[str]:
    """``a.txt``, ``a-1.txt`` … ``a-99.txt``, then random suffixes: every one within NAME_MAX_BYTES."""
    yield name
    stem, ext = _split_extension(name)
    for number in range(1, _NUMBERED_TRIES + 1):
        yield _fit(stem, f"-{number}{ext}")
    for _ in range(100):
        yield _fit(stem, f"-{secrets.token_hex(4)}{ext}")
