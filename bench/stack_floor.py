"""The stack floor: stock Django 5.2 under daphne, one async view that answers a fixed body.

    daphne -b 127.0.0.1 -p P bench.stack_floor:application

What the design fixed for this project (Django + Channels' daphne) costs before any work of ours: no
middleware, no database, no DRF, no signature, no agent, no writes. The view reads the body and answers
exactly as ``floor.py`` does (the same fixed body; for a prompt ``sleep N`` it first awaits
``asyncio.sleep(N)``). Whatever our host serves, it serves less than this; the gap between the two is our
own cost.
"""

from __future__ import annotations

import asyncio

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-stack-floor",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    DATABASES={},
    LOGGING_CONFIG=None,
    USE_TZ=True,
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from bench.floor import BODY, sleep_seconds  # noqa: E402


async def answer(request: HttpRequest) -> HttpResponse:
    seconds = sleep_seconds(request.body)
    if seconds:
        await asyncio.sleep(seconds)
    return HttpResponse(BODY, content_type="application/json")


async def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b'{"status":"healthy"}', content_type="application/json")


urlpatterns = [path("input", answer), path("health", health)]
application = get_asgi_application()
