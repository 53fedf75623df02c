"""Every failure a client can hit, with its HTTP status and the exact text of the spec.

Raised anywhere in the core; rendered in three places only: the DRF exception handler (HTTP),
the WebSocket conversation and the relay link (``ERROR`` frames). This module imports nothing of ours.
"""

from __future__ import annotations

from typing import Any


class HostError(Exception):
    """Base class: ``status`` is the HTTP status, ``message`` the client-facing text.

    ``code`` and ``data`` are optional JSON-RPC style extras that travel next to ``error``.
    ``fatal`` asks a WebSocket transport to close after sending the ERROR frame.
    """

    status: int = 400
    message: str = "bad request"
    code: int | str | None = None
    fatal: bool = False

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: int | str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        if message is not None:
            self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.data = data
        super().__init__(self.message)

    def as_body(self) -> dict[str, Any]:
        """The HTTP body: ``{"error": message}`` plus ``code``/``data`` when set."""
        body: dict[str, Any] = {"error": self.message}
        if self.code is not None:
            body["code"] = self.code
        if self.data is not None:
            body["data"] = self.data
        return body

    def as_frame(self, **extra: Any) -> dict[str, Any]:
        """The WebSocket frame: ``{"type": "ERROR", "message": ...}`` plus extras."""
        frame: dict[str, Any] = {"type": "ERROR", "message": self.message}
        if self.code is not None:
            frame["code"] = self.code
        if self.data is not None:
            frame.update({k: v for k, v in self.data.items() if k not in frame})
        frame.update(extra)
        return frame


# --- 400: the request itself is wrong -------------------------------------------------------------


class BadRequest(HostError):
    status, message = 400, "bad request"


class InvalidJSON(BadRequest):
    message = "Invalid JSON"


class PromptRequired(BadRequest):
    message = "prompt required"


class UploadRejected(BadRequest):
    """An upload limit or format problem (PROTOCOL §6.2); the message is the spec's exact text."""


class SessionIdRequired(BadRequest):
    message = "session_id required"


# --- 401 / 403: who is asking ----------------------------------------------------------------------


class Unauthorized(HostError):
    status, message = 401, "unauthorized"


class Forbidden(HostError):
    status, message = 403, "forbidden"


class OriginNotAllowed(Forbidden):
    message = "forbidden: origin not allowed"


# --- 404 / 405 / 409 / 413 / 415 / 429 -------------------------------------------------------------


class NotFound(HostError):
    status, message = 404, "not found"


class SessionNotFound(NotFound):
    message, code = "Session not found", -32002


class MethodNotAllowed(HostError):
    status, message = 405, "method not allowed"


class SessionBusy(HostError):
    status, message, code = 409, "Session is busy", -32000

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("data", {"retryable": True})
        super().__init__(message, **kwargs)


class RuntimeInputRejected(SessionBusy):
    """An INPUT for a session whose running turn does not take runtime input (PROTOCOL §4, INPUT row).

    The message is the spec's text for a busy session; ``code`` and ``hint`` say why and what to do.
    """

    message, code = "session already has a running agent", "RUNTIME_INPUT_REJECTED"
    HINT = "the running turn is not accepting runtime input: the turn is unaffected; retry after its OUTPUT"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("data", {"retryable": True, "hint": self.HINT})
        super().__init__(message, **kwargs)


class PayloadTooLarge(HostError):
    status, message = 413, "request body too large"


class UnsupportedMediaType(HostError):
    status, message = 415, "Unsupported media type"


class RateLimited(HostError):
    status, message = 429, "too many requests"

    def __init__(self, message: str | None = None, *, retry_after: int = 1, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)

    def as_frame(self, **extra: Any) -> dict[str, Any]:
        """WebSocket: the HTTP body's text plus ``retryable`` and ``retry_after`` (the header's seconds)."""
        return super().as_frame(**{"retryable": True, "retry_after": self.retry_after, **extra})


# --- 5xx: our side ---------------------------------------------------------------------------------


class AgentFailed(HostError):
    """The user's agent raised (or its factory did). Details go to the log, never to the client."""

    status, message, code = 500, "Unable to run agent", -32603


class ModelUnavailable(AgentFailed):
    """The agent's model cannot be reached (no API key, unknown model, no network): the cause is named."""

    status = 503

    def __init__(self, cause: str) -> None:
        super().__init__(f"agent model unavailable: {cause}")


class TurnTimedOut(AgentFailed):
    message = "turn timed out"


class ServiceUnavailable(HostError):
    status, message = 503, "service unavailable"


class StorageUnavailable(ServiceUnavailable):
    message = "storage unavailable"


class Misconfigured(ServiceUnavailable):
    message = "misconfigured"


class InternalError(HostError):
    status, message = 500, "internal error"


# --- refusals of one socket frame (WS and relayed sockets; the socket stays open) --------------------


class UnknownMessageType(BadRequest):
    def __init__(self, kind: Any) -> None:
        super().__init__(f"unknown message type: {kind!r}")


class BinaryFrame(BadRequest):
    message = "binary frames are not supported"


class UnsupportedProtocol(BadRequest):
    """A CONNECT naming a protocol other than OIP 0.1; ``descriptor`` is the one we speak."""

    code, message = -32010, "Unsupported OIP protocol"

    def __init__(self, descriptor: dict[str, Any]) -> None:
        super().__init__(data={"retryable": False, "protocol": descriptor})


class StaleAnswer(BadRequest):
    """An answer to a question or approval that no longer waits (answered, timed out, or another turn's)."""

    code, message = "STALE_ANSWER", "that request is no longer waiting for an answer"

    def __init__(self, request_id: Any, session_id: str | None) -> None:
        super().__init__(data={"reason": "stale", "request_id": request_id, "session_id": session_id})


class TooManyFrames(HostError):
    """Past ``ws_max_frames_per_second``: this ERROR, then close 4429."""

    status, code, fatal = 429, "TOO_MANY_FRAMES", True

    def __init__(self, rate: float) -> None:
        super().__init__(f"too many messages (max {rate:g} a second)")


# --- sealed sockets (PROTOCOL §4.8): the ERROR goes out in the clear, then the socket ends (4003) ------------


class SealRefused(HostError):
    """A ``SEAL`` (or, on the client, a ``SEALED_OK``) that does not check out; ``reason`` names what is wrong."""

    fatal = True
    PREFIX = "seal refused: "

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(self.PREFIX + reason)


class SealRejected(HostError):
    """A sealed frame that does not open, repeats or lowers its counter; ``reason`` names which."""

    fatal = True
    PREFIX = "sealed frame rejected: "

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(self.PREFIX + reason)


# --- the agent's relay link: one relayed conversation refused, the link goes on (HARDENING R3) -------------


class TooManyConversations(ServiceUnavailable):
    """A new relayed conversation (or legacy INPUT) past ``max_conversations``."""

    message = "too many conversations"


class FrameDropped(ServiceUnavailable):
    """A relayed frame for a conversation whose inbox is full: that frame is dropped, the conversation goes on."""

    message = "conversation overloaded: frame dropped"


class LegacyInputUnsupported(BadRequest):
    """A relay's legacy one-shot ``INPUT`` (D12) to a link that was given no way to run it."""

    message = "legacy INPUT is not supported by this host"


# --- start-up problems (not sent to clients) -------------------------------------------------------


class ConfigError(Exception):
    """A bad setting stops start-up; the text names file, key and value."""


# -- our relay server's own sockets (PROTOCOL §8.2): its ERROR frames carry the text twice, as ``message`` and as
# ``error``, the form the released relay sends and the released client reads.
def relay_frame(error: HostError, **extra: Any) -> dict[str, Any]:
    """``error`` as our relay sends it to a client socket: the ``ERROR`` frame of /ws with ``error`` beside
    ``message``."""
    return {**error.as_frame(), "error": error.message, **extra}


def announce_frame(error: HostError | str) -> dict[str, Any]:
    """``error`` as our relay sends it to an agent's announce socket: ``{"type": "ERROR", "error": text}``, the
    form the released relay answers an ANNOUNCE with."""
    return {"type": "ERROR", "error": error.message if isinstance(error, HostError) else error}


class RelayError(HostError):
    """An error only our relay sends (``relay_frame`` to clients, ``announce_frame`` to agents)."""


class AgentNotConnected(RelayError):
    """The client's ``to`` names no announced agent, or the agent left while the client was bound to it."""

    status = 404
    message = "Agent not connected"


class ToRequired(RelayError):
    """A client socket's first frame names no agent."""

    message = "to required"


class RelayBusy(RelayError):
    """The agent's socket cannot take the frame now: that frame is dropped, the socket stays open."""

    status = 503
    message = "relay busy: frame dropped"


class Superseded(RelayError):
    """Another client socket took over the session this one was bound to."""

    status = 409
    message = "Another connection took over this session"


class AnnounceRequired(RelayError):
    message = "ANNOUNCE required before any other frame"


class AnnounceNotNewer(RelayError):
    message = "Stale announce: timestamp is not newer than the last one accepted"


class AddressChanged(RelayError):
    message = "This connection already announced another address"


class AnnouncesTooFrequent(RelayError):
    status = 429
    message = "Too many announces: slow down"


class ReplacedByNewer(RelayError):
    """Another agent socket announced this address: the older one is closed (4000)."""

    status = 409
    message = "Replaced by a newer connection for this address"
