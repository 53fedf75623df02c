"""ASGI entry: ``http`` → Django (behind the body cap, body deadline and bodies-in-flight budget of
``hosting.serving.asgi_limits``, which hold under any ASGI server), ``websocket`` → the /ws consumer.

``daphne connectonion_site.asgi:application`` serves the agent named by ``CONNECTONION_AGENT``
(or host.yaml ``agent``), the demo agent by default, with the serving limits of host.yaml (``hosting.serving.limits``).
"""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connectonion_site.settings")

import django

django.setup(set_prefix=False)  # before our modules import models (what get_asgi_application() does first)

from hosting.serving.handler import HostASGIHandler  # noqa: E402

django_app = HostASGIHandler()  # Django's handler, without a thread per request for the loop views

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from hosting.serving.asgi_limits import BodyLimitMiddleware  # noqa: E402
from hosting.serving.server import raise_fd_limit  # noqa: E402
from hosting.ws.routing import websocket_application  # noqa: E402

raise_fd_limit()  # every way of serving, uvicorn and gunicorn too (FI12); daphne's ``install`` does it as well

if "daphne.server" in sys.modules:  # served by daphne (``runhost`` or the daphne command): its connection limits
    from hosting.serving.limits import ServingLimits, install

    install(ServingLimits.of(settings.HOST))

application = BodyLimitMiddleware(
    ProtocolTypeRouter({"http": django_app, "websocket": websocket_application()}),
    max_bytes=settings.HOST.max_request_bytes,
    body_timeout=settings.HOST.body_timeout,
    bodies_in_flight=int((settings.HOST.bodies_in_flight_mb or 0) * 1024 * 1024),
)
