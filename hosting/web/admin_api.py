"""The operator's HTTP API: ``/admin/logs``, ``/admin/sessions`` (PROTOCOL §3.7, D7) and the released
trust extras ``/admin/trust/*``, ``/superadmin/*`` (§3.8). Thin DRF views over small helpers."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common import safeyaml
from common.errors import BadRequest, NotFound
from hosting.core import activity
from hosting.core.runtime import get_runtime
from hosting.web.authentication import AdminCredentials, SignedAdmin
from hosting.web.openapi import ERROR
from trust.identity import is_address

NO_LOGS = "No logs found"
DEFAULT_LINES = 200
MAX_LINES = 10000
MAX_TAIL_BYTES = 4 * 1024 * 1024  # never read more than this from the end of the log
MAX_YAML_BYTES = 5 * 1024 * 1024
MAX_YAML_FILES = 2000


def tail(path: Path, lines: int, *, max_bytes: int = MAX_TAIL_BYTES) -> bytes:
    """The last ``lines`` lines of ``path``, reading blocks backwards from the end, at most ``max_bytes``."""
    block = 64 * 1024
    with path.open("rb") as f:
        f.seek(0, 2)
        end = position = f.tell()
        chunks: list[bytes] = []
        newlines = 0
        while position > 0 and newlines <= lines and end - position < max_bytes:
            step = min(block, position, max_bytes - (end - position))
            position -= step
            f.seek(position)
            chunk = f.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    if position > 0:  # we started mid-file: drop the partial first line
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    kept = data.splitlines(keepends=True)[-lines:]
    return b"".join(kept)


def _lines(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LINES
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"lines must be an integer from 1 to {MAX_LINES}") from None
    if not 1 <= value <= MAX_LINES:
        raise BadRequest(f"lines must be an integer from 1 to {MAX_LINES}")
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _moment(value: Any) -> float:
    """``updated``/``created`` as a sortable number, whatever form a file used."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=None).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).timestamp()  # noqa: DTZ001 - local midnight, as naive
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def read_session_files(*folders: Path) -> list[dict[str, Any]]:
    """Every YAML mapping in ``folders`` (safe, without aliases; corrupt or oversized files skipped), newest first."""
    found: list[dict[str, Any]] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml"))[:MAX_YAML_FILES]:
            try:
                if not path.is_file() or path.stat().st_size > MAX_YAML_BYTES:
                    continue
                data = safeyaml.load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
                continue
            if isinstance(data, dict):
                found.append(_json_safe(data))
    found.sort(key=lambda s: _moment(s.get("updated") or s.get("created")), reverse=True)
    return found


# -- schema pieces -----------------------------------------------------------------------------------

# Bearer token (``OPENONION_API_KEY`` / ``admin_token``); signed ``X-Co-*`` headers from an admin are the other way in
# (PROTOCOL §3.4), described in the summaries: OpenAPI has no scheme for a per-request signature.
BEARER = [{"adminBearer": []}]
ADMIN_ERRORS = {
    401: OpenApiResponse(ERROR, description="no valid bearer token or signature"),
    403: OpenApiResponse(ERROR, description="no admin secret configured, or the signer is not an admin"),
    429: OpenApiResponse(ERROR, description="too many wrong tokens from this address"),
}
TRUST_RESULT = inline_serializer(
    "TrustChange",
    {
        "success": serializers.BooleanField(required=False),
        "message": serializers.CharField(required=False),
        "error": serializers.CharField(required=False),
        "level": serializers.ChoiceField(["stranger", "contact", "whitelist", "blocked"], required=False),
    },
)
SIGNED_BODY = inline_serializer(
    "SignedAdminRequest",
    {
        "payload": serializers.DictField(help_text="includes method, path, timestamp and client_id / admin_id"),
        "from": serializers.CharField(),
        "signature": serializers.CharField(),
    },
)


# -- views -------------------------------------------------------------------------------------------


class AdminLogsView(APIView):
    authentication_classes = [AdminCredentials]

    @extend_schema(
        summary="Tail of the agent's activity log",
        auth=BEARER,
        parameters=[
            OpenApiParameter(
                "lines",
                {"type": "integer", "minimum": 1, "maximum": MAX_LINES},
                description=f"lines to return (1-{MAX_LINES})",
                default=DEFAULT_LINES,
            )
        ],
        responses={
            (200, "text/plain"): OpenApiTypes.STR,
            400: ERROR,
            **ADMIN_ERRORS,
            404: OpenApiResponse(ERROR, description="no log file yet"),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        runtime = get_runtime()
        lines = _lines(request.query_params.get("lines"))
        path = activity.log_path(runtime.config.logs_dir, runtime.config.name or runtime.info.name)
        try:
            body = tail(path, lines)
        except FileNotFoundError:
            raise NotFound(NO_LOGS) from None
        return HttpResponse(body, content_type="text/plain; charset=utf-8")


class AdminSessionsView(APIView):
    authentication_classes = [AdminCredentials]

    @extend_schema(
        summary="Saved conversations from .co/evals and .co/sessions",
        auth=BEARER,
        responses={
            200: inline_serializer(
                "AdminSessions",
                {
                    "sessions": serializers.ListField(
                        child=inline_serializer(
                            "AdminSession",
                            {
                                "name": serializers.CharField(required=False),
                                "session_id": serializers.CharField(required=False),
                                "created": serializers.CharField(required=False),
                                "updated": serializers.CharField(required=False),
                                "total_cost": serializers.FloatField(required=False),
                                "total_tokens": serializers.IntegerField(required=False),
                                "turns": serializers.ListField(child=serializers.DictField(), required=False),
                            },
                        )
                    )
                },
            ),
            **ADMIN_ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        runtime = get_runtime()
        co = runtime.config.co_dir
        return Response({"sessions": read_session_files(co / "evals", co / "sessions")})


def _client_id(payload: dict[str, Any], key: str = "client_id") -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key} required")
    if not is_address(value.strip()):
        raise BadRequest(f"{key} must be an address (0x + 64 hex digits)")
    return value.strip().lower()


class _SignedAdminView(APIView):
    super_admin = False

    def admitted(self, request: Request) -> dict[str, Any]:
        runtime = get_runtime()
        if not isinstance(request.data, dict):
            raise BadRequest("request body must be a JSON object")
        admission = runtime.gate.admit_admin(
            request.data, method=request.method, path=request.path, super_admin=self.super_admin
        )
        return admission.payload


def _change(action: str, client_id: str) -> dict[str, Any]:
    lists = get_runtime().gate.lists
    level = lists.level_of(client_id)
    if action == "promote":
        steps = {"stranger": "contact", "contact": "whitelist"}
        if level == "whitelist":
            return {"error": "Already at highest level", "level": level}
    else:
        steps = {"whitelist": "contact", "contact": "stranger"}
        if level == "stranger":
            return {"error": "Already at lowest level", "level": level}
    if level == "blocked":
        return {"error": "Client is blocked. Unblock first.", "level": level}
    target = steps[level]
    for kind in ("whitelist", "contact"):
        if kind != target:
            lists.remove(client_id, kind)
    if target != "stranger":
        lists.add(client_id, target, note=f"{action}d by admin")
    new_level = lists.level_of(client_id)
    return {"success": True, "message": f"{client_id} is now {new_level}", "level": new_level}


class TrustChangeView(_SignedAdminView):
    action = "promote"

    @extend_schema(
        summary="Change a client's trust level (signed admin request)",
        request=SIGNED_BODY,
        responses={200: TRUST_RESULT, 400: ERROR, 401: ERROR, 403: ERROR},
    )
    def post(self, request: Request) -> Response:
        payload = self.admitted(request)
        client_id = _client_id(payload)
        lists = get_runtime().gate.lists
        if self.action in ("promote", "demote"):
            return Response(_change(self.action, client_id))
        if self.action == "block":
            reason = payload.get("reason") if isinstance(payload.get("reason"), str) else ""
            lists.add(client_id, "blacklist", note=reason)
            return Response({"success": True, "message": f"{client_id} blocked", "level": lists.level_of(client_id)})
        lists.remove(client_id, "blacklist")
        return Response({"success": True, "message": f"{client_id} unblocked", "level": lists.level_of(client_id)})


class TrustLevelView(APIView):
    authentication_classes = [SignedAdmin]

    @extend_schema(
        summary="A client's trust level (signed admin headers)",
        responses={
            200: inline_serializer(
                "TrustLevel",
                {
                    "client_id": serializers.CharField(),
                    "level": serializers.ChoiceField(["stranger", "contact", "whitelist", "blocked"]),
                },
            ),
            401: ERROR,
            403: ERROR,
        },
    )
    def get(self, request: Request, address: str) -> Response:
        runtime = get_runtime()
        return Response({"client_id": address, "level": runtime.gate.lists.level_of(address)})


class SuperAdminView(_SignedAdminView):
    super_admin = True
    action = "add"

    @extend_schema(
        summary="Add or remove an admin (signed by the agent's own key)",
        request=SIGNED_BODY,
        responses={
            200: inline_serializer(
                "SuperAdminResult", {"success": serializers.BooleanField(), "message": serializers.CharField()}
            ),
            400: ERROR,
            401: ERROR,
            403: ERROR,
        },
    )
    def post(self, request: Request) -> Response:
        admin_id = _client_id(self.admitted(request), "admin_id")
        lists = get_runtime().gate.lists
        if self.action == "add":
            lists.add(admin_id, "admin", note="added by super admin")
            return Response({"success": True, "message": f"{admin_id} is an admin"})
        lists.remove(admin_id, "admin")
        return Response({"success": True, "message": f"{admin_id} is no longer an admin"})
