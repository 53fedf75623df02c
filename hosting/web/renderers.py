"""Compact JSON responses with literal non-ASCII, whatever the client's ``Accept`` says."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer

from hosting.core.jsonwire import dumps


class CompactJSONRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        return dumps(data).encode("utf-8", "backslashreplace")


class OneRepresentation(DefaultContentNegotiation):
    """DRF's negotiation, except that a request nothing matches gets the view's first renderer (JSON; for the
    OpenAPI document its own JSON type) instead of an error, as RFC 9110 §12.5.1 allows: a health check sending
    ``Accept: text/plain``, a browser or a ``?format=xml`` gets the one representation there is. DRF would raise
    ``NotAcceptable`` (or ``Http404`` for the format). Where several match (``/openapi.json``: the OpenAPI type
    or ``application/json``), the client's choice still wins. The request body's type is still checked (415)."""

    def select_renderer(self, request: Any, renderers: list[Any], format_suffix: str | None = None) -> tuple[Any, str]:
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except (NotAcceptable, Http404):
            return renderers[0], renderers[0].media_type
