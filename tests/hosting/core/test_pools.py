"""The one way to a thread (``hosting.core.pools``): agent turns cannot starve the bookkeeping around them.

No server: the turn manager, the intake and the pools themselves, with an agent that holds its thread until the
test lets it go.
"""

from __future__ import annotations

import asyncio
import threading

from common.errors import TurnTimedOut
from hosting.core.agents import AgentSource
from hosting.core.config import HostConfig
from hosting.core.events import Hub
from hosting.core.intake import Intake, Submission
from hosting.core.pools import Pools
from hosting.core.throttle import Caller, Throttle
from hosting.core.turns import TurnManager
from sessions_app.eventlog import EventLog
from sessions_app.store import SessionStore
from tests.support.wait import wait_until

DEADLINE = 20  # seconds a test waits for something that must happen, before it fails
HOLD = 3 * DEADLINE  # an agent let go by nobody holds its thread at least this long


class HeldAgent:
    """Holds its agent thread until ``gate`` is set; ``entered`` and ``left`` say where it is."""

    def __init__(self) -> None:
        self.name, self.model, self.tools = "held", "test/held", []
        self.entered, self.gate, self.left = threading.Event(), threading.Event(), threading.Event()

    def input(self, prompt: str) -> str:
        self.entered.set()
        self.gate.wait(HOLD)
        self.left.set()
        return "let go"


async def test_bookkeeping_runs_while_every_agent_thread_is_busy():
    pools = Pools.build(1, 1)
    gate = threading.Event()
    try:
        pools.agents.submit(gate.wait, HOLD)  # the one agent thread is taken
        assert await asyncio.wait_for(pools.bookkeeping.run(sum, [1, 2], start=3), DEADLINE) == 6
    finally:
        gate.set()
        pools.shutdown()


async def test_a_timed_out_turn_is_recorded_while_its_agent_is_still_stuck(tmp_path):
    config = HostConfig(project_dir=tmp_path, relay_url=None, turn_timeout=0.2)
    pools, agent = Pools.build(1), HeldAgent()
    store = SessionStore(config.results_path)
    turns = TurnManager(
        config=config,
        source=AgentSource(agent),
        store=store,
        eventlog=EventLog(config.co_dir / "events.sqlite3"),
        hub=Hub(),
        pools=pools,
    )
    intake = Intake(turns=turns, throttle=Throttle(config, pool=pools.bookkeeping), config=config)
    try:
        turn = await intake.submit(
            Submission(payload={"prompt": "hold"}, signer=None, level="stranger", caller=Caller.of(None, "10.0.0.1"))
        )
        result = await asyncio.wait_for(turn.done, DEADLINE)  # the watchdog answers the client
        assert isinstance(result.error, TurnTimedOut)
        assert agent.entered.is_set() and not agent.left.is_set()  # it still holds the only agent thread

        async def status() -> str | None:
            found = (await pools.bookkeeping.run(store.get, turn.session_id)).status
            return None if found == "running" else found

        # Recorded, not queued behind the stuck agent:
        assert await wait_until(status, DEADLINE, "the timeout's record") == "failed"
        assert not agent.left.is_set()
    finally:
        agent.gate.set()
        pools.shutdown()
