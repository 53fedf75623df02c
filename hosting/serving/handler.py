"""Django's ASGI handler, minus a thread per request for the views that never leave the event loop, and with
a chunked request body read as the body it is."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from functools import cached_property
from typing import Any

from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpResponse, JsonResponse
from django.urls import set_script_prefix

log = logging.getLogger("connectonion")


class HostASGIHandler(ASGIHandler):
    """Stock Django enters a ``ThreadSensitiveContext`` for every request, so the one synchronous call each
    request makes at its end (``response.close()``, which fires ``request_finished``) starts a thread and joins
    it again: about two-thirds of the CPU of a ``GET /health`` (735 → 270 µs in ``bench/cpu_per_request.py``).

    Requests for the loop views (``LoopAPIView``: ``POST /input``, ``/health``, ``/info``, ``/``) skip that
    context and go through ``handle_on_loop``: Django's ``handle`` with the response's ``close()`` called on the
    loop instead of through ``sync_to_async``. That hand-off (a queue put, a thread wake-up, the GIL passed twice
    and a future chained back) was the last thread trip of a ``POST /input`` outside its turn (issue 20). Nothing
    in it needs a thread: ``request_finished``'s receivers retire the database connections and caches *of the
    thread they run on*, and the loop thread opens none (every query runs in a pool or a sync view's thread).
    Every synchronous view (sessions, admin API, /docs, the Django admin) still gets a context, and a thread, of
    its own.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") in self.loop_paths:
            await self.handle_on_loop(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def handle_on_loop(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Read the body, answer, close: ``ASGIHandler.handle``'s steps and signals, without the thread."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await signals.request_started.asend(sender=self.__class__, scope=scope)
        try:
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error_response, send)
                error_response.close()
                return
            response = await self._respond_unless_gone(request, receive, send)
        finally:
            body_file.close()
        if response is None:  # the client left first: the view was cancelled
            await signals.request_finished.asend(sender=self.__class__)
        else:
            response.close()

    async def _respond_unless_gone(self, request: Any, receive: Any, send: Any) -> HttpResponse | None:
        """The view's response, sent; None when the client disconnected first (the view is cancelled then, as
        Django does, so a view can clean up; a turn already started ends on its own, FI8)."""

        async def respond() -> HttpResponse:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client left during the send
                await self.send_response(response, send)
            return response

        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        responding = asyncio.create_task(respond())
        await asyncio.wait((listening, responding), return_when=asyncio.FIRST_COMPLETED)
        if listening.done():
            with contextlib.suppress(RequestAborted):
                listening.result()
        else:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
        if not responding.done():
            responding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await responding
        if responding.cancelled():
            return None
        try:
            return responding.result()
        except RequestAborted:
            return None

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
