"""The trust models are registered in the Django admin with useful columns, filters and search."""

from __future__ import annotations

from django.contrib import admin

from trust.models import ListEntry, SeenSignature, TrustDecision


def test_models_are_registered_with_columns_filters_and_search():
    for model, column in ((ListEntry, "kind"), (TrustDecision, "decision"), (SeenSignature, "expires_at")):
        model_admin = admin.site._registry[model]
        assert column in model_admin.list_display
        assert model_admin.search_fields
    assert "kind" in admin.site._registry[ListEntry].list_filter


def test_ledger_and_decision_rows_are_not_hand_edited(rf):
    request = rf.get("/")
    for model in (SeenSignature, TrustDecision):
        model_admin = admin.site._registry[model]
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_change_permission(request)


def test_app_config():
    from django.apps import apps

    config = apps.get_app_config("trust")
    assert (config.name, config.verbose_name) == ("trust", "Trust")
