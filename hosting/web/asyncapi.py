"""The WebSocket protocol of ``/ws`` as an AsyncAPI 2.6 document, served at ``/asyncapi.json``.

It describes what users send and receive (PROTOCOL §4) in their terms; tests/hosting/ws/test_asyncapi.py checks every
frame of live conversations against it, so it cannot drift from what the host does.
"""

from __future__ import annotations

from typing import Any

from hosting.core.version import __version__


def _message(
    summary: str,
    properties: dict[str, Any],
    required: tuple[str, ...] = (),
    *,
    type_name: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """One message: its JSON schema (``type`` pinned when ``type_name``), open to extra fields."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties), "required": ["type", *required]}
    if type_name is not None:
        schema["properties"]["type"] = {"const": type_name}
    message: dict[str, Any] = {"name": type_name or summary, "summary": summary, "payload": schema}
    if description:
        message["description"] = description
    return message


STR = {"type": "string"}
NUM = {"type": "number"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
OBJ = {"type": "object"}
ANY: dict[str, Any] = {}
SESSION = {
    "type": "object",
    "description": "the conversation: session_id, messages, trace, turn",
    "properties": {"session_id": STR, "messages": {"type": "array"}, "trace": {"type": "array"}, "turn": INT},
}
# Every event of a turn carries this envelope (PROTOCOL §4.7.1); our ids increase by one per session.
ENVELOPE = {
    "id": {
        "type": "string",
        "description": "position in the session's stream; send the last one seen as last_msg_id to resume",
    },
    "ts": NUM,
    "session_id": STR,
}
SIGNED = {
    "payload": {"type": "object", "description": "the signed fields (to, timestamp, ...)"},
    "from": {"type": "string", "description": "the client's address (0x + 64 hex)"},
    "signature": {"type": "string", "description": "Ed25519 signature of the canonical payload"},
}
FILES = {"type": "array", "items": {"type": "object", "properties": {"name": STR, "data": STR}}}


def _event(
    name: str, summary: str, properties: dict[str, Any] | None = None, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    return _message(summary, {**ENVELOPE, **(properties or {})}, ("id", "session_id", *required), type_name=name)


# A refused runtime input says it may be retried, and for which session (the released host's frame).
REJECTED_RULE = {
    "if": {"properties": {"code": {"const": "RUNTIME_INPUT_REJECTED"}}, "required": ["code"]},
    "then": {"properties": {"retryable": {"const": True}}, "required": ["retryable", "session_id"]},
}


def _with_rule(message: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    message["payload"]["allOf"] = [rule]
    return message


CLIENT_MESSAGES: dict[str, dict[str, Any]] = {
    "INIT": _message(
        "Open a new conversation (optional: INPUT alone does it too)",
        {"session": SESSION, "to": STR, **SIGNED},
        type_name="INIT",
    ),
    "ATTACH": _message(
        "Resume a conversation: missed events after last_msg_id are replayed",
        {"session_id": STR, "last_msg_id": STR, "to": STR, **SIGNED},
        ("session_id",),
        type_name="ATTACH",
    ),
    "CONNECT": _message(
        "Open or resume (the released client's handshake)",
        {"session_id": STR, "last_msg_id": STR, "session": SESSION, "to": STR, "timestamp": NUM, **SIGNED},
        type_name="CONNECT",
    ),
    "INPUT": _message(
        "Start a turn; sent while a turn runs, steer it (runtime input)",
        {
            "prompt": {"type": "string", "minLength": 1},
            "input_id": STR,
            "images": {"type": "array", "items": STR},
            "files": FILES,
            "session": SESSION,
        },
        ("prompt",),
        type_name="INPUT",
        description="While this session's turn runs, an INPUT is runtime input: when the agent "
        "takes it (the released connectonion runtime_input plugin, or the demo's "
        "'count slowly until I say stop') the host answers RUNTIME_INPUT_ACK and the "
        "agent reads the prompt between its steps, reporting it as a user_input event "
        "with runtime_input true; else ERROR code RUNTIME_INPUT_REJECTED, retryable, and "
        "the turn goes on. Runtime input is text only (no images or files).",
    ),
    "ASK_USER_RESPONSE": _message(
        "Answer the agent's question",
        {
            "answer": {"description": "text; a list or object for multi-select or forms"},
            "request_id": {"type": "string", "description": "the ask_user event's id"},
        },
        ("answer",),
        type_name="ASK_USER_RESPONSE",
    ),
    "APPROVAL_RESPONSE": _message(
        "Allow or refuse a tool waiting for approval",
        {
            "approved": BOOL,
            "scope": {"enum": ["once", "session"]},
            "mode": {"enum": ["reject_soft", "reject_hard", "reject_explain"]},
            "feedback": STR,
            "request_id": {"type": "string", "description": "the approval_needed event's id"},
        },
        ("approved",),
        type_name="APPROVAL_RESPONSE",
    ),
    "INTERRUPT": _message(
        "Stop the running turn at its next step: it ends with OUTPUT status cancelled", {}, type_name="INTERRUPT"
    ),
    "CANCEL": _message("Alias of INTERRUPT", {}, type_name="CANCEL"),
    "PONG": _message("Answer to PING (keeps the session alive)", {}, type_name="PONG"),
    "SESSION_STATUS": _message(
        "Ask whether a session is running", {"session": {"type": "object"}}, type_name="SESSION_STATUS"
    ),
    "SEAL": _message(
        "First frame: seal the socket end to end (NaCl boxes between your key and the agent's)",
        {
            "to": STR,
            "from": STR,
            "ephemeral": {"type": "string", "description": "one-time X25519 public key, 64 hex"},
            "timestamp": NUM,
            "signature": {
                "type": "string",
                "description": "Ed25519 over the canonical {type,to,from,ephemeral,timestamp}",
            },
        },
        ("to", "from", "ephemeral", "timestamp", "signature"),
        type_name="SEAL",
    ),
    "SEALED": _message(
        "Any frame, boxed, after SEALED_OK",
        {
            "n": {"type": "integer", "minimum": 1, "description": "counter from 1, strictly increasing"},
            "c": {"type": "string", "description": "base64 of the NaCl box; the nonce is 'c2h' + n (21 bytes)"},
        },
        ("n", "c"),
        type_name="SEALED",
    ),
}

HOST_MESSAGES: dict[str, dict[str, Any]] = {
    "CONNECTED": _message(
        "The handshake succeeded",
        {
            "session_id": STR,
            "status": {"enum": ["new", "connected", "running", "completed", "expired"]},
            "protocol": OBJ,
            "server_newer": BOOL,
            "session": SESSION,
            "chat_items": {"type": "array"},
            "result": {"type": ["string", "null"]},
            "duration_ms": INT,
        },
        ("session_id", "status"),
        type_name="CONNECTED",
    ),
    "AGENT_PROFILE": _message(
        "Who the agent is",
        {
            "session_id": STR,
            "name": STR,
            "address": STR,
            "model": {"type": ["string", "null"]},
            "tools": {"type": "array"},
            "skills": {"type": "array"},
        },
        type_name="AGENT_PROFILE",
    ),
    "PING": _message("Keep-alive (every 30 s): answer PONG", {}, type_name="PING"),
    "SEALED_OK": _message(
        "The answer to SEAL: from now on every frame is SEALED",
        {"to": STR, "from": STR, "ephemeral": STR, "client_ephemeral": STR, "signature": STR},
        ("to", "from", "ephemeral", "client_ephemeral", "signature"),
        type_name="SEALED_OK",
    ),
    "SEALED": _message(
        "Any frame, boxed",
        {"n": {"type": "integer", "minimum": 1}, "c": {"type": "string", "description": "nonce 'h2c' + n"}},
        ("n", "c"),
        type_name="SEALED",
    ),
    "OUTPUT": _message(
        "The turn's answer (its last frame)",
        {
            **ENVELOPE,
            "result": {"type": ["string", "null"]},
            "status": {
                "enum": ["cancelled"],
                "description": "present when INTERRUPT/CANCEL stopped the turn; result is "
                "then what it had answered so far (often empty)",
            },
            "duration_ms": INT,
            "session": SESSION,
            "chat_items": {"type": "array"},
            "input_id": STR,
        },
        ("session_id",),
        type_name="OUTPUT",
    ),
    "ERROR": _with_rule(
        _message(
            "Something was refused or failed; a turn's ERROR is its last frame",
            {
                **ENVELOPE,
                "message": STR,
                "code": {
                    "type": ["string", "integer"],
                    "description": "e.g. RUNTIME_INPUT_REJECTED, STALE_ANSWER, TOO_MANY_FRAMES, -32000",
                },
                "retryable": BOOL,
                "retry_after": NUM,
                "reason": STR,
                "request_id": STR,
                "hint": STR,
            },
            ("message",),
            type_name="ERROR",
            description="Fatal handshake errors are followed by close code 4003; the socket otherwise stays open. "
            "code RUNTIME_INPUT_REJECTED: an INPUT came while a turn that takes no runtime input runs; "
            "that turn is unaffected; send it again after the turn's OUTPUT.",
        ),
        REJECTED_RULE,
    ),
    "SESSION_STATUS": _message(
        "Whether a session is running", {"session_id": STR, "status": STR}, ("status",), type_name="SESSION_STATUS"
    ),
    "RUNTIME_INPUT_ACK": _message(
        "An INPUT sent during a running turn was handed to it (runtime input)",
        {
            "session_id": STR,
            "id": {"type": "string", "description": "a fresh id of this input"},
            "input_id": {"type": "string", "description": "the INPUT's input_id, when it had one"},
        },
        ("session_id", "id"),
        type_name="RUNTIME_INPUT_ACK",
    ),
    "user_input": _event(
        "user_input",
        "The turn started with this prompt; with runtime_input true, the agent read a prompt sent during the turn",
        {"content": ANY, "turn": INT, "runtime_input": BOOL},
    ),
    "user_message": _event("user_message", "Another viewer's prompt (you did not send it)", {"content": ANY}),
    "files_received": _event(
        "files_received",
        "Uploaded files were saved",
        {
            "files": {"type": "array", "items": {"type": "object", "properties": {"name": STR, "path": STR}}},
            "turn": INT,
        },
    ),
    "thinking": _event("thinking", "The model is about to be called"),
    "llm_call": _event("llm_call", "A model call started", {"model": ANY, "iteration": INT, "status": STR}),
    "llm_result": _event("llm_result", "A model call finished", {"model": ANY, "duration_ms": NUM, "status": STR}),
    "tool_call": _event(
        "tool_call", "A tool is about to run", {"tool_id": STR, "name": STR, "args": ANY, "status": STR}, ("name",)
    ),
    "tool_result": _event(
        "tool_result",
        "A tool finished",
        {
            "tool_id": STR,
            "name": STR,
            "args": ANY,
            "status": {"enum": ["completed", "failed"]},
            "result": ANY,
            "timing_ms": NUM,
            "error": ANY,
        },
        ("name", "status"),
    ),
    "approval_needed": _event(
        "approval_needed",
        "A tool waits for your permission: answer APPROVAL_RESPONSE with request_id = this id",
        {"tool_call_id": STR, "tool": STR, "arguments": OBJ, "description": STR, "batch_remaining": INT},
        ("tool",),
    ),
    "ask_user": _event(
        "ask_user",
        "The agent asks you: answer ASK_USER_RESPONSE with request_id = this id",
        {"question": STR, "options": {"type": ["array", "null"]}, "multi_select": BOOL, "fields": {"type": "array"}},
        ("question",),
    ),
    "agent_image": _event("agent_image", "The agent shows an image", {"image": STR}),
    "plan": _event("plan", "The agent's task list changed", {"entries": {"type": "array"}}),
    "session_sync": _event("session_sync", "The whole session after a step", {"session": SESSION}),
    "turn_result": _event("turn_result", "The turn finished", {"turn": INT, "reason": STR, "usage": ANY}),
}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 2.6 document of ``/ws``."""

    def refs(names: dict[str, Any], prefix: str) -> list[dict[str, str]]:
        return [{"$ref": f"#/components/messages/{prefix}{name}"} for name in names]

    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "ConnectOnion agent host: WebSocket /ws",
            "version": __version__,
            "description": (
                "One JSON object per text frame. Send INPUT to start a turn; events stream until OUTPUT (or a "
                "turn's ERROR). When the agent asks (ask_user) or a tool needs permission (approval_needed), "
                "the turn waits for your ASK_USER_RESPONSE / APPROVAL_RESPONSE carrying that event's id as "
                "request_id (answer_timeout, default an hour). INTERRUPT (or CANCEL) stops the turn. Every "
                "event has a string id increasing by one per session: reconnect with ATTACH {session_id, "
                "last_msg_id} to receive exactly what you missed; closing the socket never stops a turn. "
                "Answer PING with PONG. An INPUT sent while the turn runs steers it when the agent takes runtime input "
                "(RUNTIME_INPUT_ACK), else it is refused with ERROR code RUNTIME_INPUT_REJECTED, retryable. "
                "A client with keys may open with SEAL: after SEALED_OK every frame both "
                "ways is SEALED {n, c}, a NaCl box of the plain frame. Custom events an agent sends are forwarded with the same envelope: "
                "ignore types you do not know."
            ),
        },
        "channels": {
            "/ws": {
                "publish": {"summary": "What a client sends", "message": {"oneOf": refs(CLIENT_MESSAGES, "client.")}},
                "subscribe": {"summary": "What the host sends", "message": {"oneOf": refs(HOST_MESSAGES, "host.")}},
            },
        },
        "components": {
            "messages": {
                **{f"client.{name}": message for name, message in CLIENT_MESSAGES.items()},
                **{f"host.{name}": message for name, message in HOST_MESSAGES.items()},
            }
        },
    }
