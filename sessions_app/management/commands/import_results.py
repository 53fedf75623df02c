"""``manage.py import_results [FILE]``: copy a JSONL results file into the PostgreSQL store (issue 18).

Reads the file the way the JSONL store does (the last line of a session id wins, torn or unreadable lines
skipped and counted), leaves out expired records, and upserts the rest in batches, so running it twice is
harmless. A session already in the database with a later ``updated_at`` keeps the database's version.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

BATCH = 1000


class Command(BaseCommand):
    help = "Import .co/session_results.jsonl (or FILE) into the PostgreSQL session store."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", help="a session_results.jsonl (default: this project's)")

    def handle(self, *args: Any, **opts: Any) -> None:
        from django.conf import settings
        from django.db import connections

        from sessions_app.dbstore import _row
        from sessions_app.models import SessionResult
        from sessions_app.store import SessionStore

        if connections["default"].vendor != "postgresql":
            raise CommandError("import_results needs a PostgreSQL database: set DATABASE_URL=postgres://...")
        path = Path(opts["file"]) if opts["file"] else settings.HOST.results_path
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        source = SessionStore(path)
        now = time.time()
        records = [r.data for r in source.all() if r.visible(now)]
        existing = (
            dict(
                SessionResult.objects.filter(session_id__in=[d["session_id"] for d in records]).values_list(
                    "session_id", "updated_at"
                )
            )
            if len(records) <= 50000
            else None
        )
        rows = []
        for data in records:
            newer = existing.get(data["session_id"]) if existing is not None else None
            if newer is not None and newer > float(data.get("updated_at") or 0):
                continue
            rows.append(_row(data))
        fields = ["status", "created", "expires", "updated_at", "owner", "worker", "prompt", "data"]
        for start in range(0, len(rows), BATCH):
            SessionResult.objects.bulk_create(
                rows[start : start + BATCH], update_conflicts=True, unique_fields=["session_id"], update_fields=fields
            )
        skipped = len(records) - len(rows)
        self.stdout.write(
            f"imported {len(rows)} session(s) from {path}"
            + (f"; kept {skipped} newer in the database" if skipped else "")
            + (f"; {source.skipped_lines} unreadable line(s) skipped" if source.skipped_lines else "")
        )
