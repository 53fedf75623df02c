"""Compact JSON responses with literal non-ASCII, whatever the client's ``Accept`` says."""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
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


class OneRepresentation(BaseContentNegotiation):
    """Every route has one representation (JSON; the OpenAPI document's own JSON type): it is sent whatever the
    ``Accept`` header or a ``?format=`` asks for, as RFC 9110 §12.5.1 allows, and as a health check sending
    ``Accept: text/plain`` or a browser needs. DRF's negotiation would raise ``NotAcceptable`` (or ``Http404``
    for ``?format=xml``) instead. The request body's type is still checked (415)."""

    def select_parser(self, request: Any, parsers: list[Any]) -> Any:
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request: Any, renderers: list[Any], format_suffix: str | None = None) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type
