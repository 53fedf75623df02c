"""Django admin pages over the JSONL session store (there is no ORM model: the store is the source of truth).

``SessionsAdmin`` gives the admin site a list (filter by status, search by id or prompt, paging) and a
detail page (record fields, messages, trace). Read-only: the host writes these records itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.contrib.admin import AdminSite
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from sessions_app.records import DoesNotExist, SessionRecord
from sessions_app.store import SessionStore

STATUSES = ("running", "waiting_approval", "done", "failed", "cancelled", "interrupted")
PER_PAGE = 50


def _store() -> SessionStore:
    """The store the host serves from: the project names it (``SESSIONS_STORE``, a callable's dotted path),
    since the sessions app sits below the host and does not import it."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    return import_string(settings.SESSIONS_STORE)()


def _when(value: Any) -> str:
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _row(record: SessionRecord) -> dict[str, Any]:
    data = record.data  # one read of the stored line (the index keeps only the small fields)
    prompt = str(data.get("prompt") or "")
    return {
        "session_id": record.session_id,
        "status": record.status,
        "created": _when(record.created),
        "prompt": prompt[:120] + ("…" if len(prompt) > 120 else ""),
        "owner": record.owner or "anonymous",
        "duration_ms": data.get("duration_ms"),
    }


def search(store: SessionStore, *, status: str | None, query: str | None) -> list[SessionRecord]:
    """Newest first; ``query`` matches the start of the id or any part of the prompt (case-insensitive)."""
    found = store.filter(status=status) if status else store.all()
    if query:
        needle = query.strip().lower()
        found = [r for r in found if r.session_id.lower().startswith(needle) or needle in r.prompt.lower()]
    return list(found)


class SessionsAdmin:
    """URLs and views the admin site mounts under ``sessions_app/session/``."""

    def __init__(self, site: AdminSite) -> None:
        self.site = site

    def get_urls(self) -> list:
        wrap = self.site.admin_view
        return [
            path("sessions_app/session/", wrap(self.changelist_view), name="sessions_app_session_changelist"),
            path("sessions_app/session/<str:session_id>/", wrap(self.detail_view), name="sessions_app_session_change"),
        ]

    def _context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        return {**self.site.each_context(request), "title": title, "opts_label": "Sessions"}

    def changelist_view(self, request: HttpRequest) -> HttpResponse:
        status = request.GET.get("status") or None
        if status not in STATUSES:
            status = None
        query = (request.GET.get("q") or "").strip()[:200]
        records = search(_store(), status=status, query=query or None)
        page = Paginator(records, PER_PAGE).get_page(request.GET.get("p"))
        context = {
            **self._context(request, "Sessions"),
            "rows": [_row(r) for r in page],
            "page": page,
            "total": len(records),
            "status": status,
            "statuses": STATUSES,
            "q": query,
        }
        return TemplateResponse(request, "admin/sessions_app/session_list.html", context)

    def detail_view(self, request: HttpRequest, session_id: str) -> HttpResponse:
        try:
            record = _store().get(session_id, include_expired=True)
        except DoesNotExist:
            raise Http404("no such session") from None
        session = record.session or {}
        fields = [
            (k, v if isinstance(v, (str, int, float)) or v is None else json.dumps(v, ensure_ascii=False))
            for k, v in record.data.items()
            if k not in ("session",)
        ]
        messages = [
            {
                "role": m.get("role", ""),
                "content": m.get("content")
                if isinstance(m.get("content"), str)
                else json.dumps(m.get("content"), ensure_ascii=False, indent=1),
            }
            for m in session.get("messages") or []
            if isinstance(m, dict)
        ]
        trace = [json.dumps(t, ensure_ascii=False, indent=1, default=str) for t in session.get("trace") or []]
        context = {
            **self._context(request, f"Session {session_id}"),
            "record": record,
            "fields": fields,
            "created": _when(record.created),
            "messages": messages,
            "trace": trace,
        }
        return TemplateResponse(request, "admin/sessions_app/session_detail.html", context)
