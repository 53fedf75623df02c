"""Compact JSON responses with literal non-ASCII."""

from __future__ import annotations

from typing import Any

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
