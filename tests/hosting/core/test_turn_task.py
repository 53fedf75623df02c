"""A turn is one task of the agents pool (``TurnManager._task``): for ``Intake.run_admitting`` (the HTTP door) the
admission, the limits, the validation, the ``running`` record, the agent and the terminal record all run in one
agent thread, in that order, and the guarantees around them hold as they did with three hand-offs.

No server: the turn manager, the intake, the pools, a JSONL store and the SQLite replay log; each test plays the
door, with an ``admit`` that returns what the gate would (``trust.gate.Admission``) and notes its thread.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field

import pytest

from common.errors import PromptRequired, RateLimited, SessionBusy, TurnTimedOut, Unauthorized
from hosting.core.agents import AgentSource
from hosting.core.config import HostConfig
from hosting.core.events import Hub
from hosting.core.intake import Intake, Submission
from hosting.core.pools import Pools
from hosting.core.throttle import Caller, Throttle
from hosting.core.turns import TurnManager
from sessions_app.eventlog import EventLog
from sessions_app.records import DoesNotExist
from sessions_app.store import SessionStore
from trust.gate import Admission

DEADLINE = 20  # seconds a test waits for something that must happen, before it fails
HOLD = 3 * DEADLINE  # an agent let go by nobody holds its thread at least this long
ADDRESS = "10.0.0.9"


class RecordReadingAgent:
    """Answers with the status its own session's record has while it runs (the prompt is the session id), and
    notes the thread it ran in; ``gate`` (when given) holds it until the test lets it go."""

    def __init__(self, store: SessionStore, gate: threading.Event | None = None) -> None:
        self.name, self.model, self.tools = "reader", "test/reader", []
        self.store, self.gate = store, gate
        self.threads: list[int] = []
        self.entered = threading.Event()

    def input(self, prompt: str) -> str:
        self.threads.append(threading.get_ident())
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(HOLD)
        try:
            return f"record {self.store.get(prompt).status}"
        except DoesNotExist:
            return "record missing"


@dataclass
class Door:
    """What the HTTP door hands the intake: a blocking admission (here: a fixed verdict) and who calls."""

    payload: dict
    refuse: bool = False
    threads: list[int] = field(default_factory=list)

    def admit(self) -> Admission:
        self.threads.append(threading.get_ident())
        if self.refuse:
            raise Unauthorized("unauthorized: invalid signature")
        return Admission(signer=None, payload=self.payload, signed=False, level="stranger", reason="test")


@dataclass
class Core:
    intake: Intake
    turns: TurnManager
    throttle: Throttle
    store: SessionStore
    pools: Pools
    agent: RecordReadingAgent


def build(tmp_path, agent_of, *, threads: int = 4, **limits) -> Core:
    config = HostConfig(project_dir=tmp_path, relay_url=None, **limits)
    pools = Pools.build(threads, 2)
    store = SessionStore(config.results_path)
    agent = agent_of(store)
    turns = TurnManager(
        config=config,
        source=AgentSource(agent),
        store=store,
        eventlog=EventLog(config.co_dir / "events.sqlite3"),
        hub=Hub(),
        pools=pools,
    )
    throttle = Throttle(config, pool=pools.bookkeeping)
    return Core(Intake(turns=turns, throttle=throttle, config=config), turns, throttle, store, pools, agent)


@pytest.fixture
def made(tmp_path):
    built: list[Core] = []

    def make(agent_of=RecordReadingAgent, **options) -> Core:
        built.append(build(tmp_path / str(len(built)), agent_of, **options))
        return built[-1]

    yield make
    for core in built:
        core.pools.shutdown(wait=False, cancel_futures=True)


def turn_door(session_id: str | None = None, *, refuse: bool = False) -> Door:
    """A turn on ``session_id`` (a fresh one by default) whose prompt names it, for ``RecordReadingAgent``."""
    session_id = session_id or str(uuid.uuid4())
    return Door({"prompt": session_id, "session": {"session_id": session_id}}, refuse=refuse)


async def run(core: Core, door: Door):
    return await core.intake.run_admitting(door.admit, address=ADDRESS)


async def test_admission_running_record_and_agent_share_one_agent_thread_and_done_precedes_the_answer(made):
    core = made()
    door = turn_door()
    admission, result = await run(core, door)
    agent = core.agent
    assert (result.status, result.result) == ("done", "record running")  # running while the agent ran
    assert door.threads == agent.threads  # the admission ran in the agent's own thread: one task
    assert door.threads[0] != threading.get_ident()
    assert core.store.get(result.session_id).status == "done"  # stored before the answer reached the loop
    assert admission.level == "stranger" and core.turns.active == {}


async def test_a_busy_session_is_refused_and_its_hold_given_back(made):
    gate = threading.Event()
    core = made(lambda store: RecordReadingAgent(store, gate), max_turns_per_identity=2)
    first = turn_door()
    try:
        running = asyncio.ensure_future(run(core, first))
        assert await asyncio.to_thread(core.agent.entered.wait, DEADLINE)
        with pytest.raises(SessionBusy):
            await run(core, turn_door(first.payload["prompt"]))
        core.throttle.hold_turn(Caller.of(None, ADDRESS))()  # the refused turn's hold is free again
    finally:
        gate.set()
    _, result = await asyncio.wait_for(running, DEADLINE)
    assert result.status == "done"


async def test_a_refused_admission_starts_nothing_and_takes_no_hold(made):
    core = made(max_turns_per_identity=1)
    door = turn_door(refuse=True)
    with pytest.raises(Unauthorized):
        await run(core, door)
    with pytest.raises(DoesNotExist):
        core.store.get(door.payload["prompt"])
    core.throttle.hold_turn(Caller.of(None, ADDRESS))()  # the caller's one slot was never taken


async def test_the_limits_and_validation_keep_their_order_inside_the_task(made):
    core = made(rate_limit_burst=1, rate_limit_per_minute=1)
    with pytest.raises(PromptRequired):
        await run(core, Door({}))  # takes the burst's one token, then is refused as invalid
    with pytest.raises(RateLimited):
        await run(core, Door({}))  # refused for its rate, not for its missing prompt


async def test_with_every_agent_thread_busy_a_refusal_is_answered_from_the_bookkeeping_pool(made):
    gate = threading.Event()
    core = made(lambda store: RecordReadingAgent(store, gate), threads=1)
    try:
        running = asyncio.ensure_future(run(core, turn_door()))
        assert await asyncio.to_thread(core.agent.entered.wait, DEADLINE)
        refused = turn_door(refuse=True)
        with pytest.raises(Unauthorized):
            await asyncio.wait_for(run(core, refused), DEADLINE)  # not queued behind the held agent
        assert refused.threads and refused.threads != core.agent.threads
    finally:
        gate.set()
    assert (await asyncio.wait_for(running, DEADLINE))[1].status == "done"


async def test_a_cancelled_caller_strands_nothing_and_the_turn_ends_recorded(made):
    gate = threading.Event()
    core = made(lambda store: RecordReadingAgent(store, gate))
    door = turn_door()
    waiting = asyncio.ensure_future(run(core, door))
    assert await asyncio.to_thread(core.agent.entered.wait, DEADLINE)
    waiting.cancel()  # the HTTP client hung up
    gate.set()

    async def ended() -> bool:
        return await asyncio.to_thread(lambda: core.store.get(door.payload["prompt"]).status) == "done"

    for _ in range(DEADLINE * 20):
        if await ended() and not core.turns.active:
            break
        await asyncio.sleep(0.05)
    assert await ended() and core.turns.active == {}


async def test_the_watchdog_answers_a_turn_past_its_timeout(made):
    gate = threading.Event()
    core = made(lambda store: RecordReadingAgent(store, gate), turn_timeout=0.2)
    try:
        with pytest.raises(TurnTimedOut):
            await asyncio.wait_for(run(core, turn_door()), DEADLINE)
    finally:
        gate.set()


async def test_a_socket_turn_is_one_task_too_and_start_returns_once_running_is_recorded(made):
    gate = threading.Event()
    core = made(lambda store: RecordReadingAgent(store, gate))
    session_id = str(uuid.uuid4())
    try:
        turn = await core.intake.submit(
            Submission(
                payload={"prompt": session_id},
                signer=None,
                level="stranger",
                caller=Caller.of(None, ADDRESS),
                session_id=session_id,
                interactive=True,
            )
        )
        assert core.store.get(session_id).status == "running"
        assert core.turns.active[session_id] is turn
    finally:
        gate.set()
    result = await asyncio.wait_for(turn.done, DEADLINE)
    assert (result.status, result.result) == ("done", "record running")
