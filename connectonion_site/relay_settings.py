"""Django settings of the standalone relay (``connectonion_site.relay_asgi``): Channels and nothing else.

The relay keeps no database, sessions or templates and does not read the agent host's config. Its knobs
come from ``RELAY_*`` environment variables, which ``manage.py runrelay`` sets from its options.
"""

from __future__ import annotations

import os
import secrets

from django.core.exceptions import ImproperlyConfigured

from connectonion_site.layers import redis_host


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


def _public_url() -> str | None:
    """``RELAY_PUBLIC_URL``: the URL agents announce this relay as (D28), as a relay base URL."""
    from hosting.relay.wire import relay_identity

    raw = (os.environ.get("RELAY_PUBLIC_URL") or "").strip()
    if not raw:
        return None
    if relay_identity(raw) is None:
        raise ImproperlyConfigured(f"RELAY_PUBLIC_URL must be a ws:// or wss:// URL (got {raw!r})")
    return raw


REDIS_URL = os.environ.get("RELAY_REDIS_URL") or None
# One agent's channel carries the frames of all its clients: a burst of N clients needs room for N.
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [redis_host(REDIS_URL)],
                "capacity": int(_number("RELAY_CHANNEL_CAPACITY", 10000)),
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "hosting.relay_server.server.RelayChannelLayer",
            "CONFIG": {"capacity": int(_number("RELAY_CHANNEL_CAPACITY", 10000))},
        }
    }

RELAY = {
    "agent_ttl": _number("RELAY_AGENT_TTL", 120.0),
    "client_ping_interval": _number("RELAY_PING_INTERVAL", 30.0),
    "signature_window": _number("RELAY_SIGNATURE_WINDOW", 300.0),
    "announce_min_interval": _number("RELAY_ANNOUNCE_MIN_INTERVAL", 0.0),
    "redis_url": REDIS_URL,
    "public_url": _public_url(),
    "max_message_bytes": int(_number("RELAY_MAX_MESSAGE_BYTES", 256 * 1024 * 1024)),
    "max_frames_per_second": _number("RELAY_MAX_FRAMES_PER_SECOND", 200.0),
    "send_buffer_bytes": int(_number("RELAY_SEND_BUFFER_MB", 16.0) * 1024 * 1024),
    # daphne's connection limits (``hosting.serving.limits``): the relay answers no request bodies but its lookup.
    "header_timeout": _number("RELAY_HEADER_TIMEOUT", 30.0),
    "max_connections_per_ip": int(_number("RELAY_MAX_CONNECTIONS_PER_IP", 512)),
    "max_body_bytes": 64 * 1024,
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
