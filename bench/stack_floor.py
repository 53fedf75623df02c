"""The stack floor: stock Django 5.2 under daphne, one async view that answers a fixed body.

    daphne -b 127.0.0.1 -p P bench.stack_floor:application

What the design fixed for this project (Django + Channels' daphne) costs before any work of ours: no
middleware, no database, no DRF, no signature, no agent, no writes. The view parses the JSON body (as any
handler must) and for a prompt ``sleep N`` awaits ``asyncio.sleep(N)``, like ``floor.py``. Whatever our host
serves, it serves less than this; the gap between the two is our own cost.
"""

from __future__ import annotations

import asyncio
import json

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-stack-floor",  # noqa: S106 - a throwaway process on loopback
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

BODY = b'{"session_id":"floor","status":"done","result":"ok","duration_ms":0}'


async def answer(request: HttpRequest) -> HttpResponse:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        data = {}
    prompt = (data.get("payload") or data).get("prompt") or "" if isinstance(data, dict) else ""
    words = prompt.split() if isinstance(prompt, str) else []
    if len(words) == 2 and words[0] == "sleep":
        await asyncio.sleep(min(float(words[1]), 30.0))
    return HttpResponse(BODY, content_type="application/json")


async def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b'{"status":"healthy"}', content_type="application/json")


urlpatterns = [path("input", answer), path("health", health)]
application = get_asgi_application()
