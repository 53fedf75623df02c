"""The Django admin at /django-admin/ (Django test client): session browser, trust lists, CSRF and framing (A7),
and the constant-time token comparison of /admin (A3)."""

from __future__ import annotations

import dataclasses
import hmac
import time
import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from hosting.core.runtime import get_runtime, reset_runtime

pytestmark = pytest.mark.django_db(transaction=True)
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def admin_client(db) -> Client:
    get_user_model().objects.create_superuser("root", "root@example.com", "a-long-test-password-1")
    client = Client()
    assert client.login(username="root", password="a-long-test-password-1")
    return client


@pytest.fixture
def stored():
    """Three records in the runtime's JSONL store: done (with messages and trace), failed, running."""
    store = get_runtime().store
    tag = uuid.uuid4().hex[:8]
    ids = {name: f"{tag}-{name}-{uuid.uuid4()}" for name in ("done", "failed", "running")}
    store.create(session_id=ids["done"], prompt=f"weather in Paris {tag} {XSS}")
    store.update(
        ids["done"],
        status="done",
        result="sunny",
        duration_ms=12,
        session={
            "session_id": ids["done"],
            "turn": 1,
            "messages": [
                {"role": "user", "content": f"weather in Paris {tag}"},
                {"role": "assistant", "content": f"sunny {XSS}"},
            ],
            "trace": [{"type": "tool_result", "name": "get_weather", "result": "sunny", "timing_ms": 3.5}],
        },
    )
    store.create(session_id=ids["failed"], prompt=f"divide by zero {tag}")
    store.update(ids["failed"], status="failed", error="agent failed")
    store.create(session_id=ids["running"], prompt=f"count slowly {tag}")
    return tag, ids


def test_index_lists_sessions_and_trust_models(admin_client):
    r = admin_client.get("/django-admin/")
    assert r.status_code == 200
    body = r.content.decode()
    assert "/django-admin/sessions_app/session/" in body
    assert "/django-admin/trust/listentry/" in body and "/django-admin/trust/trustdecision/" in body
    assert r["X-Frame-Options"] == "DENY"
    for url in (
        "/django-admin/trust/listentry/",
        "/django-admin/trust/trustdecision/",
        "/django-admin/trust/listentry/add/",
    ):
        assert admin_client.get(url).status_code == 200, url


def test_session_list_filter_and_search(admin_client, stored):
    tag, ids = stored
    body = admin_client.get(f"/django-admin/sessions_app/session/?q={tag}").content.decode()
    assert all(sid in body for sid in ids.values())
    assert XSS not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    body = admin_client.get(f"/django-admin/sessions_app/session/?status=failed&q={tag}").content.decode()
    assert ids["failed"] in body and ids["done"] not in body and ids["running"] not in body
    body = admin_client.get("/django-admin/sessions_app/session/?q=DIVIDE BY ZERO").content.decode()
    assert ids["failed"] in body and ids["done"] not in body
    body = admin_client.get(f"/django-admin/sessions_app/session/?q={ids['running'][:20]}").content.decode()
    assert ids["running"] in body and ids["failed"] not in body
    r = admin_client.get("/django-admin/sessions_app/session/?status=bogus&p=999")
    assert r.status_code == 200


def test_session_detail_shows_messages_and_trace(admin_client, stored):
    _, ids = stored
    r = admin_client.get(f"/django-admin/sessions_app/session/{ids['done']}/")
    assert r.status_code == 200
    body = r.content.decode()
    assert "sunny &lt;img" in body and XSS not in body
    assert "get_weather" in body and "timing_ms" in body
    assert admin_client.get("/django-admin/sessions_app/session/no-such-id/").status_code == 404


def test_session_pages_need_a_staff_login(stored):
    _, ids = stored
    for url in ("/django-admin/sessions_app/session/", f"/django-admin/sessions_app/session/{ids['done']}/"):
        r = Client().get(url)
        assert r.status_code == 302 and "/django-admin/login/" in r["Location"]


def test_list_entry_added_in_admin_reaches_the_gate(admin_client):
    address = "0x" + uuid.uuid4().hex * 2
    gate = get_runtime().gate
    assert gate.level_of(address) == "stranger"
    r = admin_client.post(
        "/django-admin/trust/listentry/add/", {"address": address, "kind": "blacklist", "note": "abuse"}
    )
    assert r.status_code == 302, r.content.decode()[:2000]
    deadline = time.monotonic() + 5
    while gate.level_of(address) != "blocked" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gate.level_of(address) == "blocked"
    assert address in admin_client.get("/django-admin/trust/listentry/").content.decode()


def test_admin_post_without_csrf_token_is_refused(db):
    get_user_model().objects.create_superuser("csrf", "c@example.com", "a-long-test-password-2")
    client = Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.get(username="csrf"))
    r = client.post("/django-admin/trust/listentry/add/", {"address": "0x" + "ef" * 32, "kind": "whitelist"})
    assert r.status_code == 403


@pytest.fixture
def keyed_runtime():
    original = settings.HOST
    settings.HOST = dataclasses.replace(original, api_key="spy-test-key-0123456789")
    reset_runtime()
    yield
    settings.HOST = original
    reset_runtime()


def test_bearer_is_compared_in_constant_time(keyed_runtime, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    r = Client().get("/admin/sessions", HTTP_AUTHORIZATION="Bearer spy-test-key-012345678")
    assert r.status_code == 401 and calls
    calls.clear()
    r = Client().get("/admin/sessions", HTTP_AUTHORIZATION="Bearer spy-test-key-0123456789")
    assert r.status_code == 200 and calls == [(b"spy-test-key-0123456789", b"spy-test-key-0123456789")]
