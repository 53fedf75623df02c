"""The admin site: Django's, plus the session browser over the JSONL store (``sessions_app.admin_views``).

Installed through ``sessions_app.apps.HostAdminConfig`` (in ``INSTALLED_APPS`` instead of ``django.contrib.admin``), Django's
documented way to replace the default site; the trust models keep registering on ``admin.site`` as usual.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse


class HostAdminSite(admin.AdminSite):
    site_header = "ConnectOnion host"
    site_title = "ConnectOnion host admin"
    index_title = "Administration"

    def get_urls(self) -> list:
        from sessions_app.admin_views import SessionsAdmin

        return SessionsAdmin(self).get_urls() + super().get_urls()

    def get_app_list(self, request, app_label=None) -> list:
        apps = super().get_app_list(request, app_label)
        if app_label not in (None, "sessions_app") or not request.user.is_staff:
            return apps
        url = reverse(f"{self.name}:sessions_app_session_changelist")
        apps.append(
            {
                "name": "Agent sessions",
                "app_label": "sessions_app",
                "app_url": url,
                "has_module_perms": True,
                "models": [
                    {
                        "name": "Sessions",
                        "object_name": "Session",
                        "admin_url": url,
                        "add_url": None,
                        "view_only": True,
                        "perms": {"view": True},
                    }
                ],
            }
        )
        return sorted(apps, key=lambda a: a["name"].lower())
