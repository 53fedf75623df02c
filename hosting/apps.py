from django.apps import AppConfig


class HostingConfig(AppConfig):
    name = "hosting"
    verbose_name = "Hosting"

    def ready(self) -> None:
        from django.core import signals
        from django.db import close_old_connections, reset_queries

        from hosting.web.middleware import browser_request_started

        # Django's own request_started receivers are synchronous, so under ASGI each request pays a hand-off to
        # a freshly made thread to run them; they only look after that thread's database connections, which
        # only the Django admin's (synchronous) views use. One async receiver does it for those requests only.
        signals.request_started.disconnect(close_old_connections)
        signals.request_started.disconnect(reset_queries)
        signals.request_started.connect(browser_request_started, dispatch_uid="hosting.browser_request_started")
