"""``/health``, ``/info`` and ``/`` are answered from prepared bytes (``hosting.web.views.PreparedView``): the same
body and headers as DRF's own path, and a body that follows what it shows at once (``/health``'s relay state).

In process, through Django's handler and our middleware (Django's ``AsyncClient``)."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

from hosting.core.runtime import get_runtime

NEGOTIATED = "application/json;q=0.9, */*;q=0.1"  # an Accept DRF has to weigh: served by DRF's path


def shown(response) -> tuple[int, dict[str, str], bytes]:
    return response.status_code, dict(response.headers), response.content


@pytest.mark.parametrize("path", ["/health", "/info", "/"])
async def test_the_prepared_answer_is_the_one_drf_gives(path):
    client = AsyncClient()
    prepared = shown(await client.get(path))
    negotiated = shown(await client.get(path, HTTP_ACCEPT=NEGOTIATED))
    queried = shown(await client.get(path, {"format": "json"}))
    if path == "/health":  # uptime may tick between the calls
        prepared, negotiated, queried = ((s, h, b"") for s, h, _ in (prepared, negotiated, queried))
    assert prepared == negotiated == queried
    assert prepared[0] == 200 and prepared[1]["Content-Type"] == "application/json"
    assert prepared[1]["Allow"] == "GET, HEAD, OPTIONS" and prepared[1]["X-Content-Type-Options"] == "nosniff"


async def test_health_shows_a_relay_state_change_at_once():
    runtime, client = get_runtime(), AsyncClient()
    before = runtime.relay_state
    assert (await client.get("/health")).json()["relay"] == before
    runtime.relay_state = "connected"
    try:
        assert (await client.get("/health")).json()["relay"] == "connected"
    finally:
        runtime.relay_state = before
    assert (await client.get("/health")).json()["relay"] == before


async def test_another_method_still_gets_drfs_answer():
    response = await AsyncClient().post("/health")
    assert (response.status_code, response.json()) == (405, {"error": "method not allowed"})
