"""A turn's data: the request a door read (``TurnRequest``), the running ``Turn`` as the loop sees it, the ``Launch``
that carries a turn through its one pool task, and its ``TurnResult``, with the fields its terminal ``OUTPUT`` frame
carries. The turn manager (``hosting.core.turns``) makes and ends them."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.errors import HostError, RuntimeInputRejected
from hosting.core import upload_input
from hosting.core.events import PendingRequest, TurnIO
from hosting.observability import logs
from hosting.observability.turn import TurnWatch
from sessions_app.transcript import chat_items

activity = logging.getLogger("connectonion.activity")


@dataclass(frozen=True)
class TurnRequest:
    """Everything a transport read from the client, already validated and admitted."""

    prompt: str
    session: dict[str, Any] | None = None
    session_id: str | None = None
    images: tuple[upload_input.ImageInput, ...] = ()
    files: tuple[upload_input.FileInput, ...] = ()
    input_id: str | None = None
    owner: str | None = None
    level: str = "stranger"


@dataclass
class TurnResult:
    session_id: str
    status: str
    result: str | None
    duration_ms: int
    session: dict[str, Any]
    server_newer: bool = False
    error: HostError | None = None
    input_id: str | None = None

    def as_response(self) -> dict[str, Any]:
        """The ``POST /input`` body and the core of the ``OUTPUT`` frame."""
        return {
            "session_id": self.session_id,
            "status": self.status,
            "result": self.result,
            "duration_ms": self.duration_ms,
            "session": self.session,
            "chat_items": chat_items(self.session),
            "server_newer": self.server_newer,
        }


@dataclass(eq=False)  # identity: turns go in sets
class Turn:
    """A running turn, as the loop sees it."""

    session_id: str
    number: int
    owner: str | None
    prompt: str
    io: TurnIO
    done: asyncio.Future[TurnResult]
    started: float = field(default_factory=time.monotonic)
    input_id: str | None = None
    watch: TurnWatch | None = None

    @property
    def pending(self) -> PendingRequest | None:
        return self.io.pending

    def cancel(self) -> None:
        self.io.deliver({"type": "INTERRUPT"})

    def steer(self, prompt: str) -> str:
        """Hand ``prompt`` to the running agent as runtime input (the released ``RUNTIME_INPUT``); its id.

        Raises ``RuntimeInputRejected`` when the agent does not take runtime input now; the turn is unaffected.
        """
        message_id = str(uuid.uuid4())
        if not self.io.push_runtime_input({"type": "RUNTIME_INPUT", "id": message_id, "prompt": prompt}):
            raise RuntimeInputRejected()
        activity.info(
            "runtime input %s: %s",
            self.session_id[:8],
            one_line(prompt),
            extra=logs.turn_ids(session_id=self.session_id),
        )
        return message_id


Release = Callable[[], None]
Take = Callable[[], tuple[TurnRequest, Release | None]]


@dataclass(eq=False)
class Launch:
    """One turn on its way through its pool task, with the loop's ends of it (``started``, ``done``).

    ``start()`` knows the request and has reserved the session on the loop; ``launch()`` knows neither until
    ``take`` (run in the task) has admitted and read the request."""

    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[TurnResult]
    started: asyncio.Future[Turn] | None = None  # start() returns once this is set (the running record exists)
    take: Take | None = None  # launch(): the request and the caller's slot, read in the task
    request: TurnRequest | None = None
    release: Release | None = None  # the caller's concurrency slot, given back when the agent thread is done
    session_id: str | None = None  # set: reserved in ``active`` by this launch
    interactive: bool = False
    transport: str = "http"
    traceparent: str | None = None
    watch: TurnWatch | None = None
    watchdog: asyncio.TimerHandle | None = None


def output_fields(result: TurnResult) -> dict[str, Any]:
    fields = {
        "result": result.result,
        "session_id": result.session_id,
        "duration_ms": result.duration_ms,
        "session": result.session,
        "chat_items": chat_items(result.session),
    }
    if result.server_newer:
        fields["server_newer"] = True
    if result.input_id:
        fields["input_id"] = result.input_id
    return fields


def one_line(text: str, limit: int = 200) -> str:
    """Log-safe: control characters escaped, so a prompt cannot forge log lines (HARDENING H15)."""
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    return escaped + ("…" if len(text) > limit else "")
