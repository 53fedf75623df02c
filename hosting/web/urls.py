"""The agent's HTTP routes (PROTOCOL §3.0)."""

from django.urls import path
from drf_spectacular.views import SpectacularJSONAPIView

from hosting.observability.views import metrics_page
from hosting.web import admin_api, views

urlpatterns = [
    path("", views.IndexView.as_view(), name="index"),
    path("input", views.InputView.as_view(), name="input"),
    path("sessions", views.SessionListView.as_view(), name="sessions"),
    path("sessions/<str:session_id>", views.SessionDetailView.as_view(), name="session-detail"),
    path("health", views.HealthView.as_view(), name="health"),
    path("info", views.InfoView.as_view(), name="info"),
    path("metrics", metrics_page, name="metrics"),
    path("docs", views.docs_page, name="docs"),
    path("docs/api", views.api_page, name="docs-api"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("asyncapi.json", views.asyncapi_json, name="asyncapi"),
    path("admin/logs", admin_api.AdminLogsView.as_view(), name="admin-logs"),
    path("admin/sessions", admin_api.AdminSessionsView.as_view(), name="admin-sessions"),
    *[
        path(f"admin/trust/{action}", admin_api.TrustChangeView.as_view(action=action), name=f"admin-trust-{action}")
        for action in ("promote", "demote", "block", "unblock")
    ],
    path("admin/trust/level/<str:address>", admin_api.TrustLevelView.as_view(), name="admin-trust-level"),
    path("superadmin/add", admin_api.SuperAdminView.as_view(action="add"), name="superadmin-add"),
    path("superadmin/remove", admin_api.SuperAdminView.as_view(action="remove"), name="superadmin-remove"),
]
