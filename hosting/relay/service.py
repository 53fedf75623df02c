"""The host's relay link: ``runhost`` (and the ``announce`` command) wire ``RelayLink`` to the real
conversation (``hosting.conversation.protocol.Conversation``) and to a one-shot legacy INPUT turn.

``start_link`` is called by ``hosting.serving.server.serve_forever`` from daphne's ``ready_callable``: the asyncio
loop that drives twisted is set as the current loop but is not running yet, so the link's start is
scheduled on it as a task and begins as soon as the reactor runs. With ``--workers N`` only the announcer
worker calls it. ``runtime.relay_state`` follows ``link.state`` through the link's ``on_state`` callback,
so ``/health`` and the log show the real state.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from common import metrics
from hosting.relay.link import RelayLink, SendFrame

log = logging.getLogger("connectonion")
_STARTING: set[asyncio.Task[None]] = set()
LEGACY_CALLER = "relay-legacy"  # who an untagged relay INPUT (D12) is counted as by the rate and turn limits


def wiring(runtime: Any) -> dict[str, Any]:
    """The conversation factory, legacy input, summary and profile for this runtime's agent."""
    from hosting.conversation.protocol import Conversation
    from hosting.core.intake import Submission
    from hosting.core.throttle import Caller

    async def conversation_factory(send: SendFrame, *, transport: str = "relay") -> Any:
        conversation = Conversation(runtime=runtime, send=send, transport=transport)
        await conversation.start()
        return conversation

    async def legacy_input(prompt: str, input_id: str) -> str:
        # D12: a one-shot anonymous turn, trust permitting.
        admission = await runtime.pools.bookkeeping.run(
            runtime.gate.admit, None, require_to=False, prompt=prompt, transport="relay"
        )
        # A legacy frame names no client, so every legacy INPUT counts against one anonymous caller.
        caller = Caller.of(admission.signer, None, anonymous=LEGACY_CALLER)
        result = await runtime.intake.run(
            Submission.of(
                admission, caller, payload={"prompt": prompt}, transport="relay", session_id=str(uuid.uuid4())
            )
        )
        return result.result or ""

    info = runtime.info
    return {
        "factory": conversation_factory,
        "legacy": legacy_input,
        "identity": runtime.identity,
        "summary": info.system_prompt,
        "profile": {"alias": info.name, "tools": list(info.tools), "model": info.model, "skills": []},
        "what": f"agent {info.name}",
    }


def state_reporter(runtime: Any, relay_base: str | None) -> Any:
    """An ``on_state`` callback: keep ``runtime.relay_state`` (``/health``) in sync with the link.

    The log gets ``✓ relay`` on the first connection only; outages and recoveries are the link's own lines
    (one when the relay has been unreachable a while, one when it is back: issue 17.5)."""
    first = [True]

    def report(state: str) -> None:
        runtime.relay_state = state
        metrics.relay_state(state)
        if state == "connected" and first[0]:
            first[0] = False
            log.info("✓ relay (%s)", relay_base)
        elif state == "disabled":
            log.info("no relay")

    return report


def build_link(runtime: Any, **options: Any) -> RelayLink:
    parts = wiring(runtime)
    link = RelayLink.from_config(
        runtime.config,
        parts["identity"],
        conversation_factory=parts["factory"],
        legacy_input=parts["legacy"],
        summary=parts["summary"],
        profile=parts["profile"],
        **options,
    )
    report = state_reporter(runtime, link.relay_base)
    runtime.relay_state = link.state
    link.on_state = report
    return link


def start_link(runtime: Any) -> RelayLink | None:
    """Build the link and schedule its start on the server's asyncio loop; ``None`` when no relay is set."""
    if not runtime.config.relay_url:
        runtime.relay_state = "disabled"
        log.info("no relay")
        return None
    link = build_link(runtime)
    loop = asyncio.get_event_loop()  # daphne set the reactor's loop as current before ready_callable
    starting = loop.create_task(link.start())
    _STARTING.add(starting)  # the loop holds tasks weakly: keep this one until it has run
    starting.add_done_callback(_STARTING.discard)
    _stop_with_reactor(link, loop)
    return link


def _stop_with_reactor(link: RelayLink, loop: asyncio.AbstractEventLoop) -> None:
    """Close the relay socket cleanly (1001) when daphne shuts down."""
    try:
        from twisted.internet import defer, reactor
    except ImportError:  # not under daphne
        return

    def stop() -> Any:
        return defer.Deferred.fromFuture(loop.create_task(link.stop()))

    reactor.addSystemEventTrigger("before", "shutdown", stop)
