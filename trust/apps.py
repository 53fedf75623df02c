"""Django app configuration for the trust app (no I/O at start-up)."""

from __future__ import annotations

from django.apps import AppConfig


class TrustConfig(AppConfig):
    name = "trust"
    verbose_name = "Trust"
    default_auto_field = "django.db.models.BigAutoField"
