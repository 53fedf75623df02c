"""ASGI entry of the standalone relay: ``daphne connectonion_site.relay_asgi:application``.

Uses ``connectonion_site.relay_settings`` unless ``DJANGO_SETTINGS_MODULE`` names another module.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectonion_site.relay_settings")

import django

django.setup()

import sys  # noqa: E402

from django.conf import settings  # noqa: E402

from hosting.relay_server.routing import relay_application  # noqa: E402

if "daphne.server" in sys.modules:  # served by daphne (``runrelay``): the same connection limits as a host
    from hosting.serving.limits import ServingLimits, install

    install(
        ServingLimits(
            max_body_bytes=settings.RELAY["max_body_bytes"],
            header_timeout=settings.RELAY["header_timeout"],
            max_connections_per_ip=settings.RELAY["max_connections_per_ip"],
        )
    )

application = relay_application()
