"""Tell "the agent's model cannot be reached" apart from "the agent raised", and name the cause.

A user who starts the host without an API key, or with a model name the library does not know, should read
why (``agent model unavailable: OPENONION_API_KEY is not set``) instead of ``Unable to run agent``. The
causes are recognised by the class names of the released ``connectonion`` library's errors and of the
OpenAI / Anthropic clients it uses, walking the exception's chain; this module imports none of them.
"""

from __future__ import annotations

import traceback

# Library error class name -> the cause a user reads. Texts hold no secret: only what to fix.
_CAUSES = {
    "MissingAmbientAPIKey": "OPENONION_API_KEY is not set (run `co auth`, or give the agent a model whose "
    "provider key is set)",
    "LLMAuthenticationError": "the model's API refused the API key",
    "AuthenticationError": "the model's API refused the API key",
    "PermissionDeniedError": "the model's API refused the API key",
    "InsufficientCreditsError": "the model's account has no credits left",
    "PaidModelRequiredError": "this model needs a paid account",
    "LLMRateLimitError": "the model's API is rate limiting this key",
    "RateLimitError": "the model's API is rate limiting this key",
    "LLMConnectionError": "cannot connect to the model's API (no network, or the server is down)",
    "APIConnectionError": "cannot connect to the model's API (no network, or the server is down)",
    "APITimeoutError": "the model's API did not answer in time",
    "ProviderServiceError": "the model's provider answered with a server error",
    "InternalServerError": "the model's provider answered with a server error",
    "NotFoundError": "the model's API does not know this model",
}
_LIBRARIES = ("connectonion", "openai", "anthropic", "google", "litellm", "httpx")
# connectonion raises plain ValueErrors for these while building the agent (an unknown model, a missing key).
_VALUE_ERROR_HINTS = ("Unknown model", "API key required")


def model_unavailable_cause(exc: BaseException) -> str | None:
    """The user-facing cause when ``exc`` says the agent's model is out of reach, else ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__.split(".")[0]
        if module in _LIBRARIES and type(current).__name__ in _CAUSES:
            return _CAUSES[type(current).__name__]
        if isinstance(current, ValueError) and _raised_by_library(current):
            first_line = str(current).strip().splitlines()[0] if str(current).strip() else ""
            if any(hint in first_line for hint in _VALUE_ERROR_HINTS):
                return first_line.rstrip(".")
        current = current.__cause__ or current.__context__
    return None


def _raised_by_library(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    return bool(frames) and any(f"/{name}/" in frames[-1].filename for name in _LIBRARIES)
