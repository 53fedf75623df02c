"""Django settings: the loaded ``HostConfig`` turned into Django's vocabulary. No logic beyond that."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from connectonion_site.layers import redis_host
from hosting.core.config import HostConfig, load_config
from hosting.core.network import allowed_hosts
from hosting.core.version import __version__

try:
    HOST = load_config()
except ConfigError as exc:  # a clear one-line start-up error, never a traceback (HARDENING F4)
    sys.stderr.write(f"error: {exc}\n")
    raise SystemExit(2) from None

BASE_DIR = Path(__file__).resolve().parent.parent
PRODUCTION = HOST.environment == "production"
DEBUG = False

INSTALLED_APPS = [
    "sessions_app.apps.HostAdminConfig",  # django.contrib.admin with the session browser
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "hosting",
    "trust",
    "sessions_app",
]

# Django's stock middleware, as loop-friendly subclasses (hosting/web/middleware.py): no thread hand-offs on the API.
MIDDLEWARE = [
    "hosting.web.middleware.SecurityMiddleware",
    "hosting.web.middleware.StaticFilesMiddleware",
    "hosting.web.middleware.OriginMiddleware",
    "hosting.web.middleware.SessionMiddleware",
    "hosting.web.middleware.CommonMiddleware",
    "hosting.web.middleware.CsrfViewMiddleware",
    "hosting.web.middleware.AuthenticationMiddleware",
    "hosting.web.middleware.MessageMiddleware",
    "hosting.web.middleware.XFrameOptionsMiddleware",
]


def _database(url: str | None, co_dir: Path) -> dict:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": co_dir / "db.sqlite3",
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"error: DATABASE_URL must be postgres:// (got scheme {parts.scheme!r})")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 60,
    }


def _channel_layers(redis_url: str | None) -> dict:
    if redis_url:
        return {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [redis_host(redis_url)], "capacity": 1000, "expiry": 60},
            }
        }
    return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}


RESULTS_POOL_SIZE = 8  # PostgreSQL connections per process for session results (store: postgres)


def _databases(host: HostConfig) -> dict:
    default = _database(host.database_url, host.co_dir)
    databases = {"default": default}
    if host.store == "postgres":  # the same database, through a small pool every store operation hands back
        databases["results"] = {
            **default,
            "CONN_MAX_AGE": 0,
            "OPTIONS": {"connect_timeout": 3, "pool": {"min_size": 1, "max_size": RESULTS_POOL_SIZE, "timeout": 10}},
        }
    return databases


def host_settings(host: HostConfig) -> dict[str, Any]:
    """Every setting that follows from the host config (``runhost`` re-applies it after parsing options)."""
    return {
        "HOST": host,
        "SECRET_KEY": host.secret_key,
        "ALLOWED_HOSTS": allowed_hosts(host),
        "DATABASES": _databases(host),
        "CHANNEL_LAYERS": _channel_layers(host.redis_url),
        "DATA_UPLOAD_MAX_MEMORY_SIZE": host.max_request_bytes,
    }


globals().update(host_settings(HOST))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


ROOT_URLCONF = "connectonion_site.urls"
SESSIONS_STORE = (
    "hosting.core.runtime.session_store"  # the session browser's store (sessions_app does not import hosting)
)
ASGI_APPLICATION = "connectonion_site.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


REST_FRAMEWORK = {
    "DEFAULT_PARSER_CLASSES": ["hosting.web.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["hosting.web.renderers.CompactJSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "hosting.web.renderers.OneRepresentation",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "hosting.web.views.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ConnectOnion agent host",
    "DESCRIPTION": (
        "The HTTP API of an agent served by the ConnectOnion host. Every error is "
        '`{"error": "..."}` with its HTTP status. The WebSocket `/ws` (streamed events, '
        "questions, approvals, resume) is described at `/asyncapi.json`."
    ),
    "VERSION": __version__,
    "SORT_OPERATIONS": "hosting.web.openapi.operation_order",
    "SERVE_INCLUDE_SCHEMA": False,
    # The routes' security is written out per operation (admin: bearer); the signed X-Co-* headers, the
    # other way in (hosting.web.authentication), have no OpenAPI scheme for a per-request signature.
    "AUTHENTICATION_WHITELIST": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"TrustLevelEnum": ["stranger", "contact", "whitelist", "blocked"]},
    "APPEND_COMPONENTS": {"securitySchemes": {"adminBearer": {"type": "http", "scheme": "bearer"}}},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False

DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# Security posture (HARDENING P1-P3). TLS usually ends at a proxy; see SECURITY.md for the silenced ids.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None
SECURE_HSTS_SECONDS = 31536000 if PRODUCTION else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SILENCED_SYSTEM_CHECKS = ["security.W008"]  # TLS redirect belongs to the proxy (SECURITY.md)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(levelname)s: %(message)s"},
        "json": {"()": "hosting.observability.logs.JsonFormatter"},
    },  # log_format: json
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if HOST.log_format == "json" else "plain"}
    },
    "loggers": {
        "connectonion": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "daphne": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
