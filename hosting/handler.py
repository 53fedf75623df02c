"""Django's ASGI handler, minus a thread per request for the views that never leave the event loop."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.handlers.asgi import ASGIHandler


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

    @cached_property
    def loop_paths(self) -> frozenset[str]:
        """Fixed routes of ``hosting.urls`` (mounted at the root) served by a ``LoopAPIView``."""
        from hosting import urls
        from hosting.views import LoopAPIView

        paths = set()
        for pattern in urls.urlpatterns:
            view_class = getattr(getattr(pattern, "callback", None), "view_class", None)
            route = str(pattern.pattern)
            if isinstance(view_class, type) and issubclass(view_class, LoopAPIView) and "<" not in route:
                paths.add("/" + route)
        return frozenset(paths)
