"""ASGI entry: ``http`` → Django (behind the body cap), ``websocket`` → the /ws consumer.

``daphne connectonion_site.asgi:application`` serves the agent named by ``CONNECTONION_AGENT``
(or host.yaml ``agent``), the demo agent by default.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectonion_site.settings")

import django  # noqa: E402

django.setup(set_prefix=False)  # before our modules import models (what get_asgi_application() does first)

from hosting.handler import HostASGIHandler  # noqa: E402

django_app = HostASGIHandler()  # Django's handler, without a thread per request for the loop views

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from hosting.limits import BodyLimitMiddleware  # noqa: E402
from hosting.routing import websocket_application  # noqa: E402

application = BodyLimitMiddleware(
    ProtocolTypeRouter({"http": django_app, "websocket": websocket_application()}),
    max_bytes=settings.HOST.max_request_bytes,
)
