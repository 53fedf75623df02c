"""Who may read ``GET /metrics`` (in process): loopback yes; any other address only with the admin
credentials, and never when none is configured (403, like /admin); other methods 405."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db(transaction=True)
NO_KEY = {"error": "forbidden: set OPENONION_API_KEY or CONNECTONION_ADMIN_TOKEN to use /admin"}


def test_loopback_reads_the_exposition_text():
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        reply = Client(REMOTE_ADDR=address).get("/metrics")
        assert reply.status_code == 200, address
        assert reply["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        names = {f.name for f in text_string_to_metric_families(reply.content.decode())}
        assert {"connectonion_turns_started", "connectonion_websockets_open"} <= names


def test_another_address_without_configured_credentials_is_forbidden():
    reply = Client(REMOTE_ADDR="203.0.113.9").get("/metrics", HTTP_ACCEPT="application/openmetrics-text")
    assert reply.status_code == 403 and reply.json() == NO_KEY
    assert b"connectonion_" not in reply.content


def test_a_forwarded_for_header_from_an_untrusted_peer_changes_nothing():
    reply = Client(REMOTE_ADDR="203.0.113.9").get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert reply.status_code == 403


def test_writes_are_refused():
    reply = Client(REMOTE_ADDR="127.0.0.1").post("/metrics", data=b"{}", content_type="application/json")
    assert reply.status_code == 405 and reply.json() == {"error": "method not allowed"}
