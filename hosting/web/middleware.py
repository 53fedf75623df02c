"""Browser origins (PROTOCOL D22), CORS, static files, and Django's own middleware made loop-friendly, so an
async view such as ``POST /input`` never pays a thread hand-off for middleware.

Django's stock middleware (``MiddlewareMixin``) runs ``process_request``/``process_response`` through
``sync_to_async(thread_sensitive=True)`` under ASGI: two hops to one shared thread per middleware, about
fourteen per request for the stock list, all queued behind each other (HARDENING §6). Here the ones whose
hooks only compute (security headers, common, framing) run inline on the loop, and the browser-session ones
(sessions, CSRF, auth, messages) run only where a browser session exists: the Django admin.

A request without ``Origin`` comes from a non-browser client and is served. A present ``Origin`` must
be allowed, else 403; allowed origins are echoed back (never ``*`` with credentials).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Messages
from django.contrib.sessions.middleware import SessionMiddleware as _Sessions
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware as _XFrameOptions
from django.middleware.common import CommonMiddleware as _Common
from django.middleware.csrf import CsrfViewMiddleware as _Csrf
from django.middleware.security import SecurityMiddleware as _Security
from whitenoise.middleware import WhiteNoiseMiddleware

from common.errors import OriginNotAllowed
from hosting.core.network import allowed_origin

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


# --- Django's middleware, without thread hand-offs where none is needed ------------------------------------


class _Inline:
    """For stock middleware whose hooks are pure computation (headers, redirects): call them on the loop."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class SecurityMiddleware(_Inline, _Security):
    pass


class CommonMiddleware(_Inline, _Common):
    pass


class XFrameOptionsMiddleware(_Inline, _XFrameOptions):
    pass


BROWSER_SESSION_PREFIX = "/django-admin/"


class _BrowserSessionOnly:
    """For stock middleware that reads or writes the browser session (database I/O): only under the Django
    admin. Nothing else reads ``request.session``/``request.user``; DRF views are CSRF-exempt anyway."""

    def __call__(self, request: HttpRequest) -> Any:
        if request.path_info.startswith(BROWSER_SESSION_PREFIX):
            return super().__call__(request)
        return self.get_response(request)


async def browser_request_started(
    sender: Any, scope: dict[str, Any] | None = None, environ: Any = None, **kwargs: Any
) -> None:
    """``request_started`` for Django admin requests: reset the query log and retire stale database connections
    in the thread that will run the admin's synchronous views (see ``HostingConfig.ready``)."""
    from asgiref.sync import sync_to_async
    from django.db import close_old_connections, reset_queries

    path = (scope or {}).get("path") if scope is not None else (environ or {}).get("PATH_INFO")
    if isinstance(path, str) and path.startswith(BROWSER_SESSION_PREFIX):
        # Not ``hosting.core.pools``: Django's connections are per thread, and the admin's synchronous views run on
        # asgiref's one thread-sensitive thread, so the stale ones must be closed there and nowhere else.
        await sync_to_async(_fresh_connections, thread_sensitive=True)(close_old_connections, reset_queries)


def _fresh_connections(*steps: Callable[[], None]) -> None:
    for step in steps:
        step()


class SessionMiddleware(_BrowserSessionOnly, _Sessions):
    pass


class CsrfViewMiddleware(_BrowserSessionOnly, _Csrf):
    """CSRF for the Django admin's forms; the process_view hook is skipped with the rest off the admin."""

    async def process_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | None:
        """A coroutine, so the ASGI handler calls it on the loop (the check is computation on a read body)."""
        if not request.path_info.startswith(BROWSER_SESSION_PREFIX):
            return None
        return super().process_view(request, *args, **kwargs)


class AuthenticationMiddleware(_BrowserSessionOnly, _Authentication):
    pass


class MessageMiddleware(_BrowserSessionOnly, _Messages):
    pass
