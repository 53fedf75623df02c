"""The agent's HTTP routes (PROTOCOL §3.0)."""

from django.urls import path

from hosting import views

urlpatterns = [
    path("", views.IndexView.as_view(), name="index"),
    path("input", views.InputView.as_view(), name="input"),
    path("sessions", views.SessionListView.as_view(), name="sessions"),
    path("sessions/<str:session_id>", views.SessionDetailView.as_view(), name="session-detail"),
    path("health", views.HealthView.as_view(), name="health"),
    path("info", views.InfoView.as_view(), name="info"),
    path("docs", views.docs_page, name="docs"),
    path("docs/api", views.api_page, name="docs-api"),
]
