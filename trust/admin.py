"""Django admin for the trust lists, the one-use ledger and the decision log."""

from __future__ import annotations

from django.contrib import admin

from trust.models import ListEntry, SeenSignature, TrustDecision


@admin.register(ListEntry)
class ListEntryAdmin(admin.ModelAdmin):
    list_display = ("address", "kind", "note", "created")
    list_filter = ("kind", "created")
    search_fields = ("address", "note")
    ordering = ("kind", "address")
    date_hierarchy = "created"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the host itself: viewable and deletable, never hand-edited."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SeenSignature)
class SeenSignatureAdmin(ReadOnlyAdmin):
    list_display = ("digest", "expires_at")
    search_fields = ("digest",)
    ordering = ("-expires_at",)


@admin.register(TrustDecision)
class TrustDecisionAdmin(ReadOnlyAdmin):
    list_display = ("created", "identity", "decision", "level", "transport", "reason")
    list_filter = ("decision", "level", "transport", "created")
    search_fields = ("identity", "reason")
    date_hierarchy = "created"
    ordering = ("-created",)
