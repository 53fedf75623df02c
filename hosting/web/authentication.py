"""DRF authentication classes: the trust gate's admission of an HTTP request, on ``request.auth``.

Views never verify anything themselves: a class here asks the gate (``trust.gate.Gate``) and DRF puts what
the gate admitted on ``request.auth`` (``request.user`` stays ``None``: a caller is an address, not a
Django user). A refusal is the gate's own ``HostError`` (401/403 with PROTOCOL's text), rendered by
``hosting.web.views.exception_handler`` like every other error.
"""

from __future__ import annotations

import hmac
from typing import Any

from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from common.errors import Forbidden, Unauthorized
from hosting.core.runtime import get_runtime
from hosting.core.throttle import FailureWindow

NO_KEY = "forbidden: set OPENONION_API_KEY or CONNECTONION_ADMIN_TOKEN to use /admin"
FAILURES_ALLOWED = 20  # wrong bearer tokens per client address per window (HARDENING A4)
FAILURE_WINDOW = 60.0
SIGNED_HEADERS = ("x-co-", "x-from", "x-signature", "x-timestamp")

limiter = FailureWindow(FAILURES_ALLOWED, FAILURE_WINDOW)  # wrong tokens per client address, per process


def _admit_headers(request: Request, *, admin: bool) -> Any:
    extra = {"legacy_ok": True, "admin": True} if admin else {}
    return get_runtime().gate.admit_headers(
        method=request.method,
        path=request.path,
        query_string=request.META.get("QUERY_STRING", ""),
        body=request.body,
        headers=request.headers,
        **extra,
    )


class SignedReader(BaseAuthentication):
    """A read (``GET /sessions``…): signed ``X-Co-*`` headers, or none (``request.auth.signer`` is None then)."""

    def authenticate(self, request: Request) -> tuple[None, Any]:
        return None, _admit_headers(request, admin=False)


class SignedAdmin(BaseAuthentication):
    """An admin read by signed headers only (``/admin/trust/level``): the signer must be an admin."""

    def authenticate(self, request: Request) -> tuple[None, Any]:
        return None, _admit_headers(request, admin=True)


class AdminCredentials(BaseAuthentication):
    """D7: a configured bearer secret, or signed ``X-Co`` headers from an admin (``/admin/logs``…).

    ``request.auth`` is the admission of signed headers, or ``"bearer"``. Wrong tokens count against the
    client's address (``limiter``): past the allowance it is refused before the token is even compared.
    """

    def authenticate(self, request: Request) -> tuple[None, Any]:
        runtime = get_runtime()
        who = runtime.throttle.request_address(request)
        limiter.check(who)
        if any(name.lower().startswith(SIGNED_HEADERS) for name in request.headers):
            return None, _admit_headers(request, admin=True)
        secrets = [s for s in (runtime.config.api_key, runtime.config.admin_token) if s]
        if not secrets:
            raise Forbidden(NO_KEY)
        token = _bearer(request)
        if token is None or not _token_matches(token, secrets):
            limiter.failed(who)
            raise Unauthorized("unauthorized")
        return None, "bearer"

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _token_matches(token: str, secrets: list[str]) -> bool:
    """Constant-time against every configured secret (no early exit; an empty secret never matches)."""
    given = token.encode("utf-8", "surrogatepass")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, secret.encode("utf-8", "surrogatepass"))
    return matched and bool(token)
