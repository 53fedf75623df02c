from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    label = "sessions_app"
    verbose_name = "Agent sessions"


class HostAdminConfig(admin_apps.AdminConfig):
    """Django's admin with our site class (it adds the session browser)."""

    default = False  # named explicitly in INSTALLED_APPS; SessionsAppConfig stays this app's default

    default_site = "sessions_app.admin.HostAdminSite"
