"""Browser origins (PROTOCOL D22), CORS, and static files — all async-capable, so an async view such as
``POST /input`` never pays a thread hand-off for them.

A request without ``Origin`` comes from a non-browser client and is served. A present ``Origin`` must
be allowed, else 403; allowed origins are echoed back (never ``*`` with credentials).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from whitenoise.middleware import WhiteNoiseMiddleware

from hosting.errors import OriginNotAllowed
from hosting.network import allowed_origin

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "authorization, content-type, x-co-from, x-co-signature, x-co-timestamp, x-co-to, x-co-request-id"


class _DualMiddleware:
    """Runs as a coroutine under ASGI when the next handler is async, plainly otherwise."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        early = self.before(request)
        if self.is_async:
            return self._acall(request, early)
        return self.after(request, early if early is not None else self.get_response(request))

    async def _acall(self, request: HttpRequest, early: HttpResponse | None) -> HttpResponse:
        return self.after(request, early if early is not None else await self.get_response(request))

    def before(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response


class OriginMiddleware(_DualMiddleware):
    def before(self, request: HttpRequest) -> HttpResponse | None:
        origin = request.headers.get("Origin")
        if origin is not None and not allowed_origin(origin, settings.HOST, request.get_host()):
            error = OriginNotAllowed()
            return JsonResponse(error.as_body(), status=error.status)
        if request.method == "OPTIONS":
            return HttpResponse(status=204)
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        origin = request.headers.get("Origin")
        response["Access-Control-Allow-Origin"] = origin or "*"
        response["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        if origin:
            response["Vary"] = "Origin"
        return response


class StaticFilesMiddleware(_DualMiddleware):
    """WhiteNoise for ``/static/`` (an in-memory lookup), without its sync-only wrapper on API calls."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        self.whitenoise = WhiteNoiseMiddleware(get_response)

    def before(self, request: HttpRequest) -> HttpResponse | None:
        if not request.path_info.startswith(settings.STATIC_URL):
            return None
        wn = self.whitenoise
        found = wn.find_file(request.path_info) if wn.autorefresh else wn.files.get(request.path_info)
        return wn.serve(found, request) if found is not None else None
