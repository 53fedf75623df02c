"""Module-scoped real hosts with admin secrets set to canary values (start-up is the slow part)."""

from __future__ import annotations

import pytest

API_KEY = "canary-openonion-key-7f3a9c2e51"
ADMIN_TOKEN = "canary-admin-token-b81d04e6aa"
SECRET_KEY = "canary-django-secret-" + "x9" * 20
SECRETS_ENV = {"OPENONION_API_KEY": API_KEY, "CONNECTONION_ADMIN_TOKEN": ADMIN_TOKEN, "DJANGO_SECRET_KEY": SECRET_KEY}


@pytest.fixture(scope="module")
def module_host(module_hosts):
    return module_hosts
