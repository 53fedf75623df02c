"""The input serializer every transport uses: signed payload or unsigned body → ``TurnRequest``.

Errors become one sentence naming the field (HARDENING H10-H21), raised as ``BadRequest``.
"""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework import serializers

from common.errors import BadRequest, PayloadTooLarge, PromptRequired
from hosting.core import upload_input
from hosting.core.config import HostConfig
from hosting.core.turndata import TurnRequest

MAX_PROMPT = 1_048_576
MAX_SESSION_BYTES = 16 * 1024 * 1024
ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})


class PromptField(serializers.Field):
    default_error_messages = {"required": "prompt required", "null": "prompt must be a string"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("prompt must be a string")
        if not data.strip():
            raise serializers.ValidationError("prompt required")
        if len(data) > MAX_PROMPT:
            raise serializers.ValidationError(f"prompt too long (max {MAX_PROMPT} characters)")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            raise serializers.ValidationError("prompt is not valid Unicode") from None
        return data

    def to_representation(self, value: str) -> str:
        return value


class SessionField(serializers.Field):
    """The client's session object (PROTOCOL §5.1): loosely typed, but never nonsense."""

    default_error_messages = {"null": "session must be an object"}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("session must be an object")
        sid = data.get("session_id")
        if sid is not None and (not isinstance(sid, str) or not _is_uuid(sid)):
            raise serializers.ValidationError("session.session_id must be a UUID")
        messages = data.get("messages")
        if messages is not None and (
            not isinstance(messages, list)
            or not all(isinstance(m, dict) and m.get("role", "user") in ROLES for m in messages)
        ):
            raise serializers.ValidationError("session.messages must be a list of message objects")
        trace = data.get("trace")
        if trace is not None and not isinstance(trace, list):
            raise serializers.ValidationError("session.trace must be a list")
        turn = data.get("turn")
        if turn is not None and (not isinstance(turn, int) or isinstance(turn, bool) or turn < 0):
            raise serializers.ValidationError("session.turn must be a non-negative integer")
        if _approx_size(data) > MAX_SESSION_BYTES:
            raise PayloadTooLarge("session too large")
        _check_content(data)
        return data

    def to_representation(self, value: dict[str, Any]) -> dict[str, Any]:
        return value


class AnyField(serializers.Field):
    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class InputIdField(serializers.Field):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not data or len(data) > 200:
            raise serializers.ValidationError("input_id must be a string of at most 200 characters")
        return data

    def to_representation(self, value: str) -> str:
        return value


class InputSerializer(serializers.Serializer):
    """``{prompt, session?, images?, files?, input_id?}`` — unknown fields are ignored."""

    prompt = PromptField()
    session = SessionField(required=False, allow_null=True)
    images = AnyField(required=False, allow_null=True)
    files = AnyField(required=False, allow_null=True)
    input_id = InputIdField(required=False, allow_null=True)


def read_input(
    payload: dict[str, Any],
    *,
    config: HostConfig,
    owner: str | None,
    level: str = "stranger",
    session_id: str | None = None,
) -> TurnRequest:
    """Validate one input object and check the upload limits; raises ``BadRequest`` subclasses."""
    if "prompt" not in payload or payload.get("prompt") is None:
        raise PromptRequired()
    data = _valid_fields(payload)
    if data is None:
        serializer = InputSerializer(data=payload)
        if not serializer.is_valid():
            raise BadRequest(_first_error(serializer.errors))
        data = serializer.validated_data
    images, files = upload_input.parse_uploads(
        data.get("images"),
        data.get("files"),
        max_file_size_mb=config.max_file_size,
        max_files=config.max_files_per_request,
    )
    session = data.get("session")
    return TurnRequest(
        prompt=data["prompt"],
        session=session,
        session_id=session_id or (session or {}).get("session_id"),
        images=tuple(images),
        files=tuple(files),
        input_id=data.get("input_id"),
        owner=owner,
        level=level,
    )


# InputSerializer's own fields, bound once: the fast path checks exactly what the serializer declares.
_FIELDS = tuple(InputSerializer().fields.items())


def _valid_fields(payload: dict[str, Any]) -> dict[str, Any] | None:
    """``InputSerializer``'s validated data, from its own fields' checks in its order, when every field is valid;
    None when one is not, and the serializer then finds and words the error as always. A serializer deep-copies
    its fields for every instance: more CPU than the whole check, on every turn (issue 20)."""
    if not isinstance(payload, dict):
        return None
    data: dict[str, Any] = {}
    try:
        for name, field in _FIELDS:
            if name not in payload:
                continue
            value = payload[name]
            if value is None:
                if not field.allow_null:
                    return None
                data[name] = None
            else:
                data[name] = field.to_internal_value(value)
    except serializers.ValidationError:
        return None
    return data


def _check_content(session: dict[str, Any]) -> None:
    """Session content as strict as the prompt and ``images`` (issue 15.8): no lone surrogate anywhere (it
    breaks the history, the event log and the WS send), and every URL in a message is a data URL, so no
    ``http://169.254.169.254/...`` reaches the agent or its model provider."""
    stack: list[tuple[str, Any]] = [("session", session)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise serializers.ValidationError(f"{path} is not valid Unicode") from None
        elif isinstance(node, dict):
            for key, value in node.items():
                stack.append((f"{path} key", key))
                stack.append((f"{path}.{key}", value))
                if (
                    key in ("url", "image_url", "file_url")
                    and isinstance(value, str)
                    and not value[:5].lower() == "data:"
                ):
                    raise serializers.ValidationError(f"{path}.{key} must be a data URL")
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(node))


def _first_error(errors: Any) -> str:
    while isinstance(errors, dict | list):
        if not errors:
            return "bad request"
        errors = next(iter(errors.values())) if isinstance(errors, dict) else errors[0]
    return str(errors)


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except ValueError:
        return False


def _approx_size(value: Any) -> int:
    """A cheap upper-bound walk of a JSON value's size (no serialisation)."""
    total, stack = 0, [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            total += len(node) + 2
        elif isinstance(node, dict):
            total += 2 + 4 * len(node)
            for k, v in node.items():
                total += len(k)
                stack.append(v)
        elif isinstance(node, list):
            total += 2 + len(node)
            stack.extend(node)
        else:
            total += 8
        if total > MAX_SESSION_BYTES:
            break
    return total
