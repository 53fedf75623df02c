"""Django's ASGI handler, minus a thread per request for the views that never leave the event loop, and with
a chunked request body read as the body it is."""

from __future__ import annotations

import logging
import os
from functools import cached_property
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse, JsonResponse

log = logging.getLogger("connectonion")


class HostASGIHandler(ASGIHandler):
    """Stock Django enters a ``ThreadSensitiveContext`` for every request, so the one synchronous call each
    request makes at its end (``response.close()``, which fires ``request_finished``) starts a thread and joins
    it again: about two-thirds of the CPU of a ``GET /health`` (735 → 270 µs in ``bench/cpu_per_request.py``).

    Requests for the loop views (``LoopAPIView``: ``POST /input``, ``/health``, ``/info``, ``/``) skip that
    context; their ``close()`` runs on asgiref's one shared sync thread, where nothing slow runs, because every
    synchronous view (sessions, admin API, /docs, the Django admin) still gets a context, and a thread, of its own.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") in self.loop_paths:
            await self.handle(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def create_request(self, scope: dict[str, Any], body_file: Any) -> tuple[Any, HttpResponse | None]:
        """Django reads ``Content-Length`` bytes of the body and no more, so a chunked body (no such header) would
        read as empty (HARDENING H6, issue 15.9). The whole body is in ``body_file`` by now, already held to the
        cap: declare its size. A failure here is answered, never left to close the connection unanswered."""
        try:
            headers = scope.get("headers") or []
            if not any(name.lower() == b"content-length" for name, _ in headers):
                size = body_file.seek(0, os.SEEK_END)
                body_file.seek(0)
                if size:
                    scope = {**scope, "headers": [*headers, (b"content-length", str(size).encode())]}
            return super().create_request(scope, body_file)
        except Exception:
            log.exception("could not read the request to %s", scope.get("path"))
            return None, JsonResponse({"error": "bad request"}, status=400)

    @cached_property
    def loop_paths(self) -> frozenset[str]:
        """Fixed routes of ``hosting.web.urls`` (mounted at the root) served by a ``LoopAPIView``."""
        from hosting.web import urls
        from hosting.web.views import LoopAPIView

        paths = set()
        for pattern in urls.urlpatterns:
            view_class = getattr(getattr(pattern, "callback", None), "view_class", None)
            route = str(pattern.pattern)
            if isinstance(view_class, type) and issubclass(view_class, LoopAPIView) and "<" not in route:
                paths.add("/" + route)
        return frozenset(paths)
