"""OpenAPI descriptions of the public HTTP API (drf-spectacular). The views carry them as decorators only;
the shapes here follow PROTOCOL §3 and are checked against live responses in ``tests/hosting/web``."""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers

ERROR = inline_serializer(
    "Error",
    {
        "error": serializers.CharField(),
        "code": serializers.CharField(required=False),
        "data": serializers.DictField(required=False),
    },
)


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    text = {
        400: "invalid request",
        401: "signature missing, invalid or reused",
        403: "forbidden by the trust gate",
        404: "not found",
        409: "session busy",
        413: "request body too large",
        415: "unsupported media type",
        429: "rate limited",
        500: "agent failed",
        503: "service unavailable",
    }
    return {code: OpenApiResponse(ERROR, description=text[code]) for code in codes}


SESSION = serializers.DictField(help_text="session object: session_id, messages, trace, turn, ...")

INPUT_REQUEST = inline_serializer(
    "InputRequest",
    {
        "prompt": serializers.CharField(help_text="the user's message (unsigned form)", required=False),
        "session": serializers.DictField(required=False, help_text="{session_id, messages, trace, turn}"),
        "session_id": serializers.CharField(required=False),
        "images": serializers.ListField(child=serializers.CharField(), required=False, help_text="data: URLs"),
        "files": serializers.ListField(
            child=serializers.DictField(), required=False, help_text="{name, data (base64 or data: URL)}"
        ),
        "input_id": serializers.CharField(required=False),
        "payload": serializers.DictField(required=False, help_text="signed form: the fields above plus to, timestamp"),
        "from": serializers.CharField(required=False),
        "signature": serializers.CharField(required=False),
    },
)

INPUT_RESULT = inline_serializer(
    "InputResult",
    {
        "session_id": serializers.CharField(),
        "status": serializers.CharField(help_text="done; cancelled when a WebSocket viewer stopped the turn"),
        "result": serializers.CharField(allow_null=True),
        "duration_ms": serializers.IntegerField(),
        "session": SESSION,
        "chat_items": serializers.ListField(child=serializers.DictField()),
        "server_newer": serializers.BooleanField(),
    },
)

SESSION_SUMMARY = inline_serializer(
    "SessionSummary",
    {
        "session_id": serializers.CharField(),
        "status": serializers.CharField(),
        "created": serializers.IntegerField(),
    },
)

SESSION_RECORD = inline_serializer(
    "SessionRecord",
    {
        "session_id": serializers.CharField(),
        "status": serializers.CharField(),
        "prompt": serializers.CharField(required=False),
        "created": serializers.IntegerField(),
        "expires": serializers.IntegerField(required=False),
        "result": serializers.CharField(required=False, allow_null=True),
        "error": serializers.CharField(required=False),
        "duration_ms": serializers.IntegerField(required=False),
        "session": serializers.DictField(required=False),
    },
)

input_schema = extend_schema(
    summary="Run one turn and return its result",
    request=INPUT_REQUEST,
    examples=[
        OpenApiExample("A new conversation", value={"prompt": "Translate hello to Spanish"}, request_only=True),
        OpenApiExample(
            "Continue a conversation",
            request_only=True,
            value={
                "prompt": "What is my name?",
                "session": {
                    "session_id": "550e8400-e29b-41d4-a716-446655440000",
                    "messages": [],
                    "trace": [],
                    "turn": 1,
                },
            },
        ),
        OpenApiExample(
            "With a file",
            request_only=True,
            value={
                "prompt": "Summarise this",
                "files": [{"name": "notes.txt", "data": "data:text/plain;base64,aGVsbG8="}],
            },
        ),
    ],
    description=(
        "Send a prompt; the answer comes back when the agent is done. Leave out `session` to start a "
        "conversation; send back the `session` object of the previous response to continue it. "
        "`images` are data: URLs, `files` are `{name, data}` (base64). Over HTTP nobody can answer "
        "the agent's questions or approvals: use the WebSocket `/ws` for those. A `careful` host "
        "accepts unsigned requests; a `strict` one needs the signed form (`payload`, `from`, "
        "`signature`) that the ConnectOnion client sends."
    ),
    responses={200: INPUT_RESULT, **_errors(400, 401, 403, 404, 409, 413, 415, 429, 500, 503)},
)
session_detail_schema = extend_schema(
    summary="One stored session result",
    description=(
        "The record of one conversation turn by its `session_id`: `running`, then `done` with its "
        "`result` (or `failed` with an `error`, or `cancelled` when `INTERRUPT` stopped it: its `result` "
        "is what the agent had answered so far, and the conversation goes on). Kept for `result_ttl` seconds (a day by default). "
        "Anonymous results are readable by anyone holding the id; a signed caller's only by that "
        "caller."
    ),
    responses={200: SESSION_RECORD, **_errors(401, 403, 404)},
)
session_list_schema = extend_schema(
    summary="Stored sessions the caller may read, newest first",
    description=(
        "A signed caller sees its own sessions. Anonymous sessions are listed at trust `open`, and "
        "at `careful` only to the operator on the host's own machine."
    ),
    operation_id="sessions_list",
    parameters=[
        OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, description="1-1000", default=100)
    ],
    responses={
        200: inline_serializer("SessionList", {"sessions": serializers.ListField(child=SESSION_SUMMARY)}),
        **_errors(400, 401, 403),
    },
)
health_schema = extend_schema(
    summary="Liveness",
    description=(
        "For load balancers and monitors: `status` is `healthy` while the host serves; `relay` tells whether the "
        "agent is reachable through the relay."
    ),
    responses={
        200: inline_serializer(
            "Health",
            {
                "status": serializers.CharField(),
                "agent": serializers.CharField(),
                "uptime": serializers.IntegerField(),
                "relay": serializers.CharField(),
                "store": serializers.CharField(help_text="where session results live: jsonl or postgres"),
                "replay_log": serializers.CharField(help_text="where replay events live: sqlite or redis"),
            },
        )
    },
)
info_schema = extend_schema(
    summary="What the agent is and accepts",
    description=(
        "The agent's name, address, model and tools, the trust level, and what `/input` accepts (images, files "
        "and their limits)."
    ),
    responses={
        200: inline_serializer(
            "Info",
            {
                "name": serializers.CharField(),
                "address": serializers.CharField(),
                "tools": serializers.ListField(child=serializers.CharField()),
                "model": serializers.CharField(allow_null=True),
                "trust": serializers.CharField(),
                "version": serializers.CharField(),
                "accepted_inputs": serializers.DictField(),
                "summary": serializers.CharField(),
                "examples": serializers.ListField(child=serializers.CharField()),
                "skills": serializers.ListField(child=serializers.DictField()),
                "protocol": serializers.DictField(),
                "seal": serializers.BooleanField(
                    help_text="WebSocket sockets may be sealed end to end (SEAL, PROTOCOL §4.8)"
                ),
            },
        )
    },
)
index_schema = extend_schema(
    summary="Route index",
    description="Links to the other routes.",
    responses={
        200: inline_serializer(
            "Index",
            {
                "docs": serializers.CharField(),
                "info": serializers.CharField(),
                "health": serializers.CharField(),
                "input": serializers.CharField(),
                "websocket": serializers.CharField(),
                "openapi": serializers.CharField(required=False),
            },
        )
    },
)


# Routes in the order a user meets them on /docs/api: run a turn, read results, check the host, then admin.
USER_ORDER = ("/input", "/sessions/{session_id}", "/sessions", "/health", "/info", "/")


def operation_order(endpoint: tuple) -> tuple[int, str, str]:
    """drf-spectacular's SORT_OPERATIONS key: public routes in ``USER_ORDER``, the admin ones after them."""
    path, _regex, method, _view = endpoint
    rank = USER_ORDER.index(path) if path in USER_ORDER else len(USER_ORDER)
    return rank, path, method
