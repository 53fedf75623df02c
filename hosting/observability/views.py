"""``GET /metrics``: the Prometheus exposition, for a scraper on loopback or one holding the admin credentials."""

from __future__ import annotations

import ipaddress

from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.request import Request

from common import metrics
from common.errors import HostError, MethodNotAllowed, NotFound
from hosting.core.runtime import get_runtime


def metrics_page(request: HttpRequest) -> HttpResponse:
    """A plain Django view (no DRF content negotiation: Prometheus asks for OpenMetrics first and accepts
    text). Loopback callers (the socket's peer, or the client a trusted proxy names) need nothing; anyone
    else needs what ``/admin`` needs (D7): 401 without or with a wrong token, 403 when none is configured."""
    runtime = get_runtime()
    try:
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed()
        if not runtime.config.metrics:
            raise NotFound()
        if not _loopback(runtime.throttle.request_address(request)):
            from hosting.web.authentication import AdminCredentials

            AdminCredentials().authenticate(Request(request))
    except HostError as exc:
        return JsonResponse(exc.as_body(), status=exc.status)
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback
