"""One intake for every door: a transport reads its body or frame into a ``Submission`` and calls
``Intake.submit`` (or ``Intake.run``, which also waits for the result).

The order is the same at every door, written once here:

1. the gate's result comes in with the submission (the door ran the gate: HTTP on the body, /ws on the
   handshake or the signed command, the relay's legacy INPUT anonymously);
2. when the door already knows the session and a turn runs on it: the input goes to that turn as runtime
   input if its agent takes it (``_steer``; on another worker through the bridge), else it is refused as busy; otherwise the caller's rate limit
   and its turn holds (``hosting.core.throttle``);
3. the input is validated (``hosting.core.messages.read_input``);
4. the turn runs and is recorded (``hosting.core.turns.TurnManager.start``).

A door whose gate has not run yet (HTTP) calls ``Intake.run_admitting``: with an agent thread free, steps 1 to 4
run in that order as one task of the agents pool (``TurnManager.launch``), so the turn costs one hand-off to a
thread instead of three.

A door keeps only what is its own: parsing its transport and rendering the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from common.errors import BadRequest, RuntimeInputRejected
from hosting.core.bridge import Bridge
from hosting.core.config import HostConfig
from hosting.core.messages import read_input
from hosting.core.throttle import Caller, Release, Throttle
from hosting.core.turndata import Turn, TurnRequest, TurnResult
from hosting.core.turns import TurnManager
from sessions_app.store import LIVE_STATUSES, DoesNotExist

TEXT_ONLY = "runtime input is text only: attach files to the next turn"

Ready = Callable[[TurnRequest], Awaitable[None]]


@dataclass(frozen=True)
class Submission:
    """One turn as a door read it: who (the gate's verdict and the caller the limits count) and what."""

    payload: dict[str, Any]  # the object to read the input from (a verified payload, or the plain body)
    signer: str | None  # the gate's verified signer (None: anonymous)
    level: str  # the gate's list level for the signer
    caller: Caller  # whom the rate limit and the turn holds count
    transport: str = "http"  # http, ws or relay (metrics and traces)
    session_id: str | None = None  # the session the door has settled on (/ws), else read from the input
    client_session: dict[str, Any] | None = None  # the door's copy of the session, used when the input has none
    interactive: bool = False  # the agent may ask the client (ask_user, approvals): /ws only
    traceparent: str | None = None  # the client's W3C trace context

    @classmethod
    def of(cls, admission: Any, caller: Caller, *, payload: dict[str, Any] | None = None, **fields: Any) -> Submission:
        """From a gate ``Admission``: its signer and level, and its payload unless the door names another."""
        return cls(
            payload=admission.payload if payload is None else payload,
            signer=admission.signer,
            level=admission.level,
            caller=caller,
            **fields,
        )


@dataclass(frozen=True)
class Steered:
    """An input handed to the session's running turn as runtime input (nothing new started)."""

    turn: Turn | None  # None: the turn runs on another worker
    message_id: str  # the RUNTIME_INPUT's id, echoed in RUNTIME_INPUT_ACK
    input_id: str | None


class Intake:
    """The one core entry of a turn (see the module docstring for the order)."""

    def __init__(
        self, *, turns: TurnManager, throttle: Throttle, config: HostConfig, bridge: Bridge | None = None
    ) -> None:
        self.turns = turns
        self.throttle = throttle
        self.config = config
        self.bridge = bridge  # runtime input for a turn that runs on another worker (``hosting.core.bridge``)

    async def submit(self, submission: Submission, *, ready: Ready | None = None) -> Turn | Steered:
        """Admit, validate and start the turn; returns at once with the running ``Turn``, or ``Steered`` when
        the input went to the session's running turn as runtime input.

        ``ready`` is the door's last word before the turn starts, once the input is valid (the /ws conversation
        stops showing the previous turn there). Raises ``HostError`` subclasses; nothing is held after one.
        """
        if submission.session_id is not None:
            running = self.turns.running(submission.session_id, submission.signer)  # busy, or no runtime input
            if running is not None:
                return await self._steer(running, submission)
            if await self._runs_elsewhere(submission):
                return await self._steer_elsewhere(submission)
        await self.throttle.check_rate(submission.caller)
        request, release = self._hold_and_read(submission)
        try:
            if ready is not None:
                await ready(request)
        except BaseException:
            release()
            raise
        # From here the turn manager owns ``release``: it calls it when the turn ends or does not start.
        return await self.turns.start(
            request,
            interactive=submission.interactive,
            release=release,
            transport=submission.transport,
            traceparent=submission.traceparent,
        )

    async def _steer(self, turn: Turn, submission: Submission) -> Steered:
        """An INPUT while the session's turn runs and its agent takes runtime input (PROTOCOL §4 INPUT row): the
        same rate limit and input checks as any INPUT, no turn hold (it starts no turn), text only."""
        await self.throttle.check_rate(submission.caller)
        request = self.read(submission)
        if request.images or request.files:
            raise BadRequest(TEXT_ONLY)
        return Steered(turn, turn.steer(request.prompt), request.input_id)

    async def _runs_elsewhere(self, submission: Submission) -> bool:
        """Whether the submitter's turn on this session runs in another process (its record is live)."""
        session_id = submission.session_id
        assert session_id is not None
        try:
            record = await self.turns.pools.bookkeeping.run(self.turns.store.get, session_id)
        except DoesNotExist:
            return False
        return record.status in LIVE_STATUSES and record.owner == submission.signer

    async def _steer_elsewhere(self, submission: Submission) -> Steered:
        """Runtime input for the turn another worker runs: the same checks, then the bridge asks that worker;
        without a bridge (or no answer) it is refused as not taken, and the viewer of that turn goes on."""
        await self.throttle.check_rate(submission.caller)
        request = self.read(submission)
        if request.images or request.files:
            raise BadRequest(TEXT_ONLY)
        assert submission.session_id is not None
        taken = None
        if self.bridge is not None:
            taken = await self.bridge.steer(submission.session_id, request.prompt, signer=submission.signer)
        if taken is None:
            raise RuntimeInputRejected()
        return Steered(None, taken, request.input_id)

    async def run(self, submission: Submission) -> TurnResult:
        """``submit`` and wait for the result (HTTP, the relay's legacy INPUT); raises the turn's error.

        These doors name no session up front (``session_id`` None, or a fresh one), so nothing is steered."""
        turn = await self.submit(submission)
        assert isinstance(turn, Turn)
        result = await asyncio.shield(turn.done)
        if result.error is not None:
            raise result.error
        return result

    async def run_admitting(
        self, admit: Callable[[], Any], *, address: str | None, transport: str = "http", traceparent: str | None = None
    ) -> tuple[Any, TurnResult]:
        """``run`` for a door whose gate has not run yet: ``admit()`` is the gate's blocking check (a ``trust.gate``
        ``Admission``), ``address`` the client's. Returns the admission and the result; raises the refusal or
        the turn's error. The door names no session up front, so nothing is steered.

        With an agent thread free, the admission, the limits, the validation and the whole turn are one task of
        the agents pool, in this module's order. With every agent thread busy the admission runs on the
        bookkeeping pool first, so a refusal never waits behind running agents (issue 16); so it does when the
        hub must join the turn's group on the loop first (``TurnManager.can_launch``).
        """
        if not self.turns.can_launch():
            admission = await self.turns.pools.bookkeeping.run(admit)
            return admission, await self.run(_admitted(admission, address, transport, traceparent))
        admitted: list[Any] = []

        def take() -> tuple[TurnRequest, Release]:  # agent thread
            admitted.append(admit())
            submission = _admitted(admitted[0], address, transport, traceparent)
            self.throttle.take_rate(submission.caller)
            return self._hold_and_read(submission)

        result = await asyncio.shield(self.turns.launch(take, transport=transport, traceparent=traceparent))
        if result.error is not None:
            raise result.error
        return admitted[0], result

    def _hold_and_read(self, submission: Submission) -> tuple[TurnRequest, Release]:
        """The caller's turn hold, then the validated input (the hold is given back if the input is refused)."""
        release = self.throttle.hold_turn(submission.caller)
        try:
            return self.read(submission), release
        except BaseException:
            release()
            raise

    def read(self, submission: Submission) -> TurnRequest:
        """The validated ``TurnRequest`` (``read_input``), with the door's session when the input has none."""
        request = read_input(
            submission.payload,
            config=self.config,
            owner=submission.signer,
            level=submission.level,
            session_id=submission.session_id,
        )
        if request.session is None and submission.client_session is not None:
            request = replace(request, session=submission.client_session)
        return request


def _admitted(admission: Any, address: str | None, transport: str, traceparent: str | None) -> Submission:
    """The submission of an admitted request: counted against its signer, or its client address."""
    return Submission.of(admission, Caller.of(admission.signer, address), transport=transport, traceparent=traceparent)
