"""DRF's JSON parser replaced by our strict one: ``{"error": …}`` texts, no 500 on deep nesting."""

from __future__ import annotations

from typing import Any

from rest_framework.parsers import BaseParser

from hosting.core.jsonwire import loads_object


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> dict[str, Any]:
        return loads_object(stream.read(), detailed=False)
