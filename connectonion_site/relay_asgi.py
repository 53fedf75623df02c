"""ASGI entry of the standalone relay: ``daphne connectonion_site.relay_asgi:application``.

Uses ``connectonion_site.relay_settings`` unless ``DJANGO_SETTINGS_MODULE`` names another module.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectonion_site.relay_settings")

import django  # noqa: E402

django.setup()

from hosting.relay.routing import relay_application  # noqa: E402

application = relay_application()
