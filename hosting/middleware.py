"""Browser origins (PROTOCOL D22) and CORS for the API.

A request without ``Origin`` comes from a non-browser client and is served. A present ``Origin`` must
be allowed, else 403; allowed origins are echoed back (never ``*`` with credentials).
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from hosting.errors import OriginNotAllowed
from hosting.network import allowed_origin

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "authorization, content-type, x-co-from, x-co-signature, x-co-timestamp, x-co-to, x-co-request-id"


class OriginMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not allowed_origin(origin, settings.HOST, request.get_host()):
            error = OriginNotAllowed()
            return JsonResponse(error.as_body(), status=error.status)
        if request.method == "OPTIONS":
            response = HttpResponse(status=204)
        else:
            response = self.get_response(request)
        response["Access-Control-Allow-Origin"] = origin or "*"
        response["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        if origin:
            response["Vary"] = "Origin"
        return response
