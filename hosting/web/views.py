"""HTTP adapters: read (one call) → act (one call into the core) → shape (one call)."""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

from adrf.views import APIView as AsyncAPIView
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions as drf_exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import (
    BadRequest,
    HostError,
    InternalError,
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    UnsupportedMediaType,
)
from hosting.conversation.protocol import PROTOCOL_DESCRIPTOR
from hosting.core.runtime import Runtime, get_runtime
from hosting.core.version import __version__
from hosting.web import openapi
from hosting.web.asyncapi import asyncapi_document
from hosting.web.authentication import SignedReader
from hosting.web.renderers import CompactJSONRenderer
from sessions_app.records import DoesNotExist

log = logging.getLogger("connectonion")


class LoopAPIView(AsyncAPIView):
    """An async DRF view that never leaves the event loop on its own account.

    Stock adrf runs DRF's ``initial()`` through ``sync_to_async``, and Django renders a DRF ``Response`` in
    ``sync_to_async(response.render)``: two hand-offs to the one shared sync thread per request, queued
    behind every other request's. Here neither does I/O (no authenticators, permissions or throttles are
    configured; rendering is JSON encoding), so both run inline and the view returns a plain, rendered
    ``HttpResponse``.
    """

    async def async_dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            method = request.method.lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            response = (handler or self.http_method_not_allowed)(request, *args, **kwargs)
            if inspect.isawaitable(response):
                response = await response
        except Exception as exc:  # noqa: BLE001 - DRF's dispatch: handle_exception renders every error
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return _rendered(self.response)


def _rendered(response: HttpResponse) -> HttpResponse:
    if not isinstance(response, Response):
        return response  # a plain Django response (nothing to render)
    response.render()
    plain = HttpResponse(response.content, status=response.status_code)
    for header, value in response.items():
        plain[header] = value
    return plain


_JSON = CompactJSONRenderer()


class InputView(LoopAPIView):
    """``POST /input``: run one turn and return its result (async: a slow turn parks no thread)."""

    @openapi.input_schema
    async def post(self, request: Request) -> HttpResponse:
        runtime = get_runtime()
        if not request.body:
            raise InvalidJSON()  # HARDENING H1: an empty body is not an empty object
        admission, result = await runtime.intake.run_admitting(
            functools.partial(runtime.gate.admit, request.data, transport="http"),
            address=runtime.throttle.request_address(request),
            transport="http",
            traceparent=request.headers.get("traceparent"),
        )
        # Rendered here, as DRF's Response would be (the one renderer, so no negotiation to honour): no template
        # response to render on the loop and copy into a plain one (issue 20).
        body = _JSON.render(result.as_response())
        return HttpResponse(body, content_type=_JSON.media_type, headers=_trust_headers(runtime, admission))


class SessionDetailView(APIView):
    """``GET /sessions/{id}``: one stored record, for whoever may read it (PROTOCOL §3.2)."""

    authentication_classes = [SignedReader]

    @openapi.session_detail_schema
    def get(self, request: Request, session_id: str) -> Response:
        runtime = get_runtime()
        reader = request.auth
        try:
            record = runtime.store.get(session_id)
        except DoesNotExist:
            raise NotFound() from None
        if not _may_read(runtime, reader, record.owner):
            raise NotFound()
        return Response(_public_record(record.data))


class SessionListView(APIView):
    """``GET /sessions``: newest first, only what the caller may read (PROTOCOL §3.3, D21)."""

    authentication_classes = [SignedReader]

    @openapi.session_list_schema
    def get(self, request: Request) -> Response:
        runtime = get_runtime()
        reader = request.auth
        limit = _limit(request.query_params.get("limit"))
        if reader.signer is None and not _anonymous_listing_allowed(runtime, request):
            return Response({"sessions": []})
        if reader.signer is not None and runtime.gate.is_admin(reader.signer):
            found = runtime.store.filter(visible=True)
        else:
            found = runtime.store.filter(visible=True, owner=reader.signer)
        return Response({"sessions": [r.summary() for r in found[:limit]]})


PLAIN_ACCEPT = frozenset({None, "", "*/*", "application/json"})  # what DRF's negotiation answers with JSON as is


class PreparedView(LoopAPIView):
    """A ``GET`` whose JSON body is the same for every caller and changes rarely (``/health``, ``/info``, ``/``),
    answered from bytes encoded once per change of what it shows (``sources`` by identity, ``values`` by value),
    without DRF's request wrapper, content negotiation, rendering and copy into a plain response: those cost more
    than the answer, on the loop every ``/health`` probe shares with the turns. Headers and body are the ones
    DRF gives; middleware runs as for any view. Another method, an ``Accept`` naming a type or a query string
    still goes through DRF (whose answer to the last two is the same JSON: ``renderers.OneRepresentation``)."""

    extra_headers: dict[str, str] = {}
    _prepared: tuple[tuple[Any, ...], tuple[Any, ...], bytes] | None = None  # per class: sources, values, body

    def body(self, runtime: Runtime) -> dict[str, Any]:
        raise NotImplementedError

    def changes(self, runtime: Runtime) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """What the body depends on: objects compared by identity, values compared by value."""
        return (runtime,), ()

    async def async_dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        meta = request.META
        if (
            request.method in ("GET", "HEAD")
            and not meta.get("QUERY_STRING")
            and meta.get("HTTP_ACCEPT") in PLAIN_ACCEPT
        ):
            return self.prepared(get_runtime())
        return await super().async_dispatch(request, *args, **kwargs)

    async def get(self, request: Request) -> Response:
        return Response(self.body(get_runtime()), headers=self.extra_headers)

    def prepared(self, runtime: Runtime) -> HttpResponse:
        sources, values = self.changes(runtime)
        cached = type(self)._prepared
        if (
            cached is None
            or cached[1] != values
            or len(cached[0]) != len(sources)
            or any(a is not b for a, b in zip(cached[0], sources, strict=True))
        ):
            cached = type(self)._prepared = (sources, values, CompactJSONRenderer().render(self.body(runtime)))
        response = HttpResponse(cached[2], content_type=CompactJSONRenderer.media_type)
        response["Allow"] = ", ".join(self.allowed_methods)
        for header, value in self.extra_headers.items():
            response[header] = value
        return response


class HealthView(PreparedView):
    @openapi.health_schema
    async def get(self, request: Request) -> Response:
        return await super().get(request)

    def changes(self, runtime: Runtime) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return (runtime,), (runtime.uptime(), runtime.relay_state)  # uptime: whole seconds

    def body(self, runtime: Runtime) -> dict[str, Any]:
        body = {
            "status": "healthy",
            "agent": runtime.info.name,
            "uptime": runtime.uptime(),
            "relay": runtime.relay_state,
            "store": runtime.store.kind,
            "replay_log": runtime.eventlog.kind,
        }
        if runtime.config.worker is not None:  # --workers N: which worker answered (an index, not a pid)
            body["worker"] = runtime.config.worker
        return body


class InfoView(PreparedView):
    extra_headers = {"Cache-Control": "no-store"}

    @openapi.info_schema
    async def get(self, request: Request) -> Response:
        return await super().get(request)

    def changes(self, runtime: Runtime) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return (runtime, runtime.config, runtime.info), ()

    def body(self, runtime: Runtime) -> dict[str, Any]:
        return agent_info(runtime)


class IndexView(PreparedView):
    @openapi.index_schema
    async def get(self, request: Request) -> Response:
        return await super().get(request)

    def changes(self, runtime: Runtime) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return (), ()

    def body(self, runtime: Runtime) -> dict[str, Any]:
        return {
            "docs": "/docs",
            "info": "/info",
            "health": "/health",
            "input": "POST /input",
            "websocket": "/ws",
            "openapi": "/openapi.json",
        }


def agent_info(runtime: Runtime) -> dict[str, Any]:
    """The ``/info`` body (PROTOCOL §3.5); also the /docs page's context."""
    cfg, info = runtime.config, runtime.info
    return {
        "name": cfg.name or info.name,
        "address": runtime.address,
        "tools": list(info.tools),
        "model": info.model,
        "trust": cfg.trust_level,
        "version": __version__,
        "accepted_inputs": {
            "text": True,
            "images": True,
            "files": {"max_file_size_mb": cfg.max_file_size, "max_files_per_request": cfg.max_files_per_request},
        },
        "summary": cfg.summary or (info.system_prompt[:1000] if info.system_prompt else f"{info.name} agent"),
        "examples": list(cfg.examples),
        "skills": [],
        "protocol": PROTOCOL_DESCRIPTOR,
        # Sockets may be sealed (PROTOCOL §4.8). The released client reads no flag for it (it offers SEAL on
        # every socket when it has keys); this tells people and other clients.
        "seal": True,
    }


def docs_page(request: HttpRequest):
    runtime = get_runtime()
    return render(request, "hosting/docs.html", {"agent": agent_info(runtime), "ws_path": "/ws"})


def api_page(request: HttpRequest):
    runtime = get_runtime()
    return render(request, "hosting/api.html", {"agent": agent_info(runtime)})


def asyncapi_json(request: HttpRequest) -> JsonResponse:
    """``GET /asyncapi.json``: the WebSocket protocol of ``/ws`` (AsyncAPI 2.6)."""
    return JsonResponse(asyncapi_document(), json_dumps_params={"ensure_ascii": False})


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Django-level 400s (DisallowedHost, malformed multipart) as JSON, never the HTML page (HARDENING G4)."""
    return JsonResponse({"error": "bad request"}, status=400)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"error": "not found"}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": "internal error"}, status=500)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's handler replaced: every error is ``{"error": "..."}`` with the right status (STYLE §5)."""
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        exc = UnsupportedMediaType()
    elif isinstance(exc, drf_exceptions.MethodNotAllowed):
        exc = MethodNotAllowed()
    elif isinstance(exc, drf_exceptions.NotFound):
        exc = NotFound()
    elif isinstance(exc, drf_exceptions.ParseError):
        exc = InvalidJSON()
    elif isinstance(exc, drf_exceptions.APIException):  # any other of DRF's: its status, never a 500
        exc = HostError(str(exc.detail), status=exc.status_code)
    elif not isinstance(exc, HostError):
        log.error("unexpected error in %s", context.get("view").__class__.__name__, exc_info=exc)
        exc = InternalError()
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return Response(exc.as_body(), status=exc.status, headers=headers)


def _trust_headers(runtime: Runtime, admission: Any) -> dict[str, str]:
    if admission.signer is None and runtime.config.trust_level == "careful":
        return {"X-Co-Trust": "careful; signature recommended"}
    return {}


def _may_read(runtime: Runtime, reader: Any, owner: str | None) -> bool:
    if owner is None:
        return True  # anonymous sessions: anyone holding the (unguessable) id
    return reader.signer is not None and (reader.signer == owner or runtime.gate.is_admin(reader.signer))


def _anonymous_listing_allowed(runtime: Runtime, request: HttpRequest) -> bool:
    """D21: anonymous listing at open; at careful only for the operator on loopback."""
    level = runtime.config.trust_level
    if level == "open":
        return True
    if level == "careful" and not runtime.config.public_domain:
        return request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1")
    return False


def _limit(raw: str | None) -> int:
    if raw is None:
        return 100
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("limit must be an integer from 1 to 1000") from None
    if not 1 <= value <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000")
    return value


def _public_record(data: dict[str, Any]) -> dict[str, Any]:
    """The stored record without process bookkeeping."""
    hidden = {"worker", "pid", "host", "owner"}
    return {k: v for k, v in data.items() if k not in hidden and v is not None}
