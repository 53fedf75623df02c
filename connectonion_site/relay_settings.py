"""Django settings of the standalone relay (``connectonion_site.relay_asgi``): Channels and nothing else.

The relay keeps no database, sessions or templates and does not read the agent host's config. Its knobs
come from ``RELAY_*`` environment variables, which ``manage.py runrelay`` sets from its options.
"""

from __future__ import annotations

import os
import secrets

from django.core.exceptions import ImproperlyConfigured


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number (got {raw!r})") from None
    if value < 0:
        raise ImproperlyConfigured(f"{name} must not be negative (got {raw!r})")
    return value


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)  # nothing is signed with it
DEBUG = False
ALLOWED_HOSTS = ["*"]  # a public relay answers under any name; it serves no cookies or pages
INSTALLED_APPS = ["channels"]
DATABASES: dict = {}
USE_TZ = True
TIME_ZONE = "UTC"
ASGI_APPLICATION = "connectonion_site.relay_asgi.application"

REDIS_URL = os.environ.get("RELAY_REDIS_URL") or None
# One agent's channel carries the frames of all its clients: a burst of N clients needs room for N.
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": int(_number("RELAY_CHANNEL_CAPACITY", 10000)),
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "hosting.relay.server.RelayChannelLayer",
            "CONFIG": {"capacity": int(_number("RELAY_CHANNEL_CAPACITY", 10000))},
        }
    }

RELAY = {
    "agent_ttl": _number("RELAY_AGENT_TTL", 120.0),
    "client_ping_interval": _number("RELAY_PING_INTERVAL", 30.0),
    "signature_window": _number("RELAY_SIGNATURE_WINDOW", 300.0),
    "announce_min_interval": _number("RELAY_ANNOUNCE_MIN_INTERVAL", 0.0),
    "redis_url": REDIS_URL,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "connectonion": {
            "handlers": ["console"],
            "level": os.environ.get("RELAY_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "daphne": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
