"""Trust lists (PROTOCOL §7.3-7.4): ``host()`` arguments, host.yaml entries, ``.co/*.txt`` files and
the admin-edited ``ListEntry`` rows, merged and read cheaply on every decision.

Files are re-read when their stat changes; database rows are cached for ``db_ttl`` seconds so an
admin edit is seen by every process within about a second, without a restart.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import Misconfigured
from trust.identity import is_address, normalize_address

if TYPE_CHECKING:
    from trust.identity import AgentIdentity
    from trust.options import TrustOptions

logger = logging.getLogger("connectonion.trust")

UNREADABLE = "misconfigured: trust lists unavailable"
KINDS = ("blacklist", "whitelist", "contact", "admin")
LEVELS = ("blocked", "whitelist", "contact", "stranger")
# Which files feed which list, in .co/ (blocklist.txt and blacklist.txt are aliases).
LIST_FILES = {
    "blacklist": ("blocklist.txt", "blacklist.txt"),
    "whitelist": ("whitelist.txt",),
    "contact": ("contacts.txt",),
    "admin": ("admins.txt",),
}
MAX_LIST_FILE = 4 * 1024 * 1024


def parse_list(text: str) -> tuple[str, ...]:
    """Entries of a list file: one per line, ``#`` starts a comment, blank lines skipped, lowercased."""
    entries = []
    for line in text.lstrip("\ufeff").splitlines():
        entry = line.split("#", 1)[0].strip().lower()
        if entry:
            entries.append(entry)
    return tuple(entries)


@dataclass(frozen=True)
class Patterns:
    """Exact addresses plus ``*`` wildcard patterns, each matching the whole (lowercased) address."""

    exact: frozenset[str]
    wildcards: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, entries: Iterable[str]) -> Patterns:
        exact, wild = set(), []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            if "*" in entry:
                wild.append(re.compile(".*".join(re.escape(part) for part in entry.split("*"))))
            else:
                exact.add(entry)
        return cls(frozenset(exact), tuple(wild))

    def matches(self, value: str) -> bool:
        value = value.strip().lower()
        return value in self.exact or any(p.fullmatch(value) for p in self.wildcards)

    def __or__(self, other: Patterns) -> Patterns:
        return Patterns(self.exact | other.exact, self.wildcards + other.wildcards)


EMPTY = Patterns(frozenset(), ())


class ListFile:
    """One list file, re-parsed only when its size, mtime, ctime or inode change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, ...] | None = None
        self._patterns = EMPTY
        self._lock = threading.Lock()

    def patterns(self) -> Patterns:
        """Current entries; a missing file is empty. Unreadable -> ``Misconfigured`` (fail closed)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return EMPTY
        except OSError as exc:
            raise self._failure(exc) from None
        stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return self._patterns
        with self._lock:
            if stamp != self._stamp:
                if st.st_size > MAX_LIST_FILE:
                    raise self._failure(ValueError(f"larger than {MAX_LIST_FILE} bytes"))
                try:
                    text = self.path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise self._failure(exc) from None
                self._patterns = Patterns.of(parse_list(text))
                self._stamp = stamp
            return self._patterns

    def _failure(self, exc: Exception) -> Misconfigured:
        logger.error("cannot read trust list %s: %s", self.path, exc)
        return Misconfigured(UNREADABLE)


def _config_sources(entries: Iterable[str], project_dir: Path) -> tuple[Patterns, tuple[ListFile, ...]]:
    """host()/host.yaml entries: addresses and patterns inline, or a list file relative to the project."""
    inline, files = [], []
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        if not is_address(text) and "*" not in text:
            candidate = Path(text) if Path(text).is_absolute() else project_dir / text
            if candidate.is_file():
                files.append(ListFile(candidate))
                continue
            logger.warning("trust list entry %r is neither an address nor a file; kept as written", text)
        inline.append(text)
    return Patterns.of(inline), tuple(files)


class AccessLists:
    """Who is blocked, whitelisted, a contact or an admin. Our own address is always an admin.

    Reads the database only when ``use_database`` (the default) and caches rows for ``db_ttl`` s.
    Call from synchronous code (the ORM is not usable on an event loop). Failures -> ``Misconfigured``.
    """

    def __init__(
        self,
        config: TrustOptions,
        identity: AgentIdentity | None,
        *,
        use_database: bool = True,
        db_ttl: float = 1.0,
    ) -> None:
        self.own_address = identity.address.lower() if identity is not None else None
        self.use_database = use_database
        self.db_ttl = db_ttl
        co_dir = config.co_dir
        project_dir = config.project_dir
        black_inline, black_files = _config_sources(config.blacklist, project_dir)
        white_inline, white_files = _config_sources(config.whitelist, project_dir)
        self._inline = {
            "blacklist": black_inline,
            "whitelist": white_inline,
            "contact": EMPTY,
            "admin": EMPTY,
        }
        self._files: dict[str, tuple[ListFile, ...]] = {
            kind: tuple(ListFile(co_dir / name) for name in names) for kind, names in LIST_FILES.items()
        }
        self._files["blacklist"] += black_files
        self._files["whitelist"] += white_files
        self._db: dict[str, Patterns] = dict.fromkeys(KINDS, EMPTY)
        self._db_expires = 0.0
        self._db_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------------

    def _database(self) -> dict[str, Patterns]:
        if not self.use_database:
            return self._db
        now = time.monotonic()
        if now < self._db_expires:
            return self._db
        with self._db_lock:
            if now >= self._db_expires:
                from django.db import DatabaseError

                from trust.models import ListEntry

                grouped: dict[str, list[str]] = {kind: [] for kind in KINDS}
                try:
                    for kind, address in ListEntry.objects.values_list("kind", "address"):
                        grouped.setdefault(kind, []).append(address)
                except DatabaseError as exc:
                    logger.error("cannot read trust list entries from the database: %s", exc)
                    raise Misconfigured(UNREADABLE) from None
                self._db = {kind: Patterns.of(grouped[kind]) for kind in KINDS}
                self._db_expires = time.monotonic() + self.db_ttl
        return self._db

    def patterns(self, kind: str) -> Patterns:
        """Everything currently on list ``kind`` (one of ``KINDS``)."""
        merged = self._inline[kind] | self._database()[kind]
        for list_file in self._files[kind]:
            merged = merged | list_file.patterns()
        return merged

    def invalidate(self) -> None:
        """Forget cached database rows (after this process edits them)."""
        self._db_expires = 0.0

    # -- questions -----------------------------------------------------------------------------------

    def is_blacklisted(self, address: str | None) -> bool:
        return bool(address) and self.patterns("blacklist").matches(str(address))

    def is_whitelisted(self, address: str | None) -> bool:
        return bool(address) and self.patterns("whitelist").matches(str(address))

    def is_contact(self, address: str | None) -> bool:
        return bool(address) and self.patterns("contact").matches(str(address))

    def is_admin(self, address: str | None) -> bool:
        if not address:
            return False
        if self.own_address is not None and str(address).strip().lower() == self.own_address:
            return True
        return self.patterns("admin").matches(str(address))

    def is_super_admin(self, address: str | None) -> bool:
        """Only our own address (PROTOCOL §7.4)."""
        return bool(address) and self.own_address is not None and str(address).lower() == self.own_address

    def level_of(self, address: str | None) -> str:
        """``blocked`` > ``whitelist`` > ``contact`` > ``stranger``; admins count as whitelisted."""
        if not address:
            return "stranger"
        if self.is_blacklisted(address):
            return "blocked"
        if self.is_whitelisted(address) or self.is_admin(address):
            return "whitelist"
        if self.is_contact(address):
            return "contact"
        return "stranger"

    # -- editing (database rows only; files and arguments belong to the operator) --------------------

    def add(self, address: str, kind: str, *, note: str = "") -> bool:
        """Put ``address`` on list ``kind``; True if it was not there yet. ``ValueError`` for bad input."""
        from trust.models import ListEntry

        if kind not in KINDS:
            raise ValueError(f"unknown list {kind!r}")
        _, created = ListEntry.objects.get_or_create(
            address=normalize_address(address), kind=kind, defaults={"note": note[:200]}
        )
        self.invalidate()
        return created

    def remove(self, address: str, kind: str) -> bool:
        """Take ``address`` off the database list ``kind``; True if a row was deleted."""
        from trust.models import ListEntry

        deleted, _ = ListEntry.objects.filter(address=normalize_address(address), kind=kind).delete()
        self.invalidate()
        return bool(deleted)
