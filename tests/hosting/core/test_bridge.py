"""The cross-worker bridge (``hosting.core.bridge``) without processes: two cores in one project folder, as two
``--workers`` share it, each with its hub bridged over one channel layer (Channels' in-memory layer, the same
interface channels_redis gives the host). Real turns, real store and replay log; only the processes are missing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from common.errors import RuntimeInputRejected
from hosting.core import bridge as bridge_module
from hosting.core.bridge import Bridge
from hosting.core.intake import Steered, Submission
from hosting.core.throttle import Caller
from hosting.demo import DemoAgent
from tests.support.core import Core, build_core, stop
from tests.support.net import free_port
from tests.support.wait import wait_until

ANYONE = Caller.of(None, "10.0.0.1")


def submission(prompt: str, session_id: str, *, interactive: bool = False) -> Submission:
    return Submission(
        payload={"prompt": prompt},
        signer=None,
        level="stranger",
        caller=ANYONE,
        transport="ws",
        session_id=session_id,
        interactive=interactive,
    )


@pytest.fixture
async def workers(tmp_path):
    """Two workers on one layer: ``runner`` runs the turns, ``viewer`` watches and answers from elsewhere."""
    layer = InMemoryChannelLayer()
    made: list[Core] = []

    def worker(agent=None) -> Core:
        core = build_core(tmp_path, agent, layer=layer, rate_limit_per_minute=0)
        core.bridge.start()
        made.append(core)
        return core

    yield worker
    for core in made:
        await stop(core)


async def watched(viewer: Core, session_id: str):
    """A viewer's live subscription, once its worker has joined the session's group (events sent before
    would go only to the replay log, which a real viewer reads first)."""
    sub = viewer.hub.subscribe(session_id)
    await wait_until(lambda: viewer.bridge.channel is not None, what="the viewer's channel")
    group = f"session.{session_id}"
    await wait_until(
        lambda: viewer.bridge.channel in viewer.bridge.layer.groups.get(group, {}),
        what="the viewer's worker in the session's group",
    )
    return sub


async def frames_until(sub, kind: str, timeout: float = 20) -> list[dict]:
    frames = []
    while not frames or frames[-1]["type"] != kind:
        frames.append(await asyncio.wait_for(sub.get(), timeout))
    return frames


async def running_turn(core: Core, prompt: str, session_id: str, *, interactive: bool = False):
    turn = await core.intake.submit(submission(prompt, session_id, interactive=interactive))
    await wait_until(lambda: turn.io._seq > 0, what="the turn's first event")
    return turn


async def test_every_event_of_a_turn_reaches_a_viewer_on_the_other_worker_in_order(workers):
    runner, viewer = workers(), workers()
    session_id = str(uuid.uuid4())
    sub = await watched(viewer, session_id)
    turn = await runner.intake.submit(submission("hello", session_id))
    frames = await frames_until(sub, "OUTPUT")
    assert frames[-1]["result"] == "echo: hello" and (await turn.done).result == "echo: hello"
    ids = [int(f["id"]) for f in frames]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # every event once, in order
    assert viewer.bridge.received >= len(frames)  # each came over the layer, none from a local publish
    assert runner.hub.viewers(session_id) == 0  # the runner's own events never came back to it


async def test_an_answer_from_the_other_worker_reaches_the_agent_and_a_stale_one_is_dropped(workers, caplog):
    runner, viewer = workers(DemoAgent()), workers()
    session_id = str(uuid.uuid4())
    turn = await running_turn(runner, "quiz me", session_id, interactive=True)
    await wait_until(lambda: turn.pending is not None, what="the question")
    asked = turn.pending
    caplog.set_level(logging.INFO, "connectonion.bridge")
    stale = {"type": "ASK_USER_RESPONSE", "answer": "Lyon", "request_id": "not-the-question"}
    assert await viewer.bridge.forward(session_id, stale, signer=None, kind="ask_user", request_id="not-the-question")
    await wait_until(lambda: "stale ask_user" in caplog.text, what="the stale answer dropped")
    stranger = {"type": "ASK_USER_RESPONSE", "answer": "Lyon", "request_id": asked.id}
    await viewer.bridge.forward(session_id, stranger, signer="0xsomeone-else", kind="ask_user", request_id=asked.id)
    answer = {"type": "ASK_USER_RESPONSE", "answer": "Paris", "request_id": asked.id}
    await viewer.bridge.forward(session_id, answer, signer=None, kind="ask_user", request_id=asked.id)
    assert (await asyncio.wait_for(turn.done, 20)).result == "Correct!"  # the stranger's Lyon never arrived


async def test_an_interrupt_from_the_other_worker_cancels_the_turn(workers):
    runner, viewer = workers(DemoAgent()), workers()
    session_id = str(uuid.uuid4())
    turn = await running_turn(runner, "count to 30 slowly", session_id)
    assert await viewer.bridge.forward(session_id, {"type": "INTERRUPT"}, signer=None)
    assert (await asyncio.wait_for(turn.done, 20)).status == "cancelled"


async def test_runtime_input_sent_to_the_other_worker_steers_the_turn_there(workers):
    runner, viewer = workers(DemoAgent()), workers()
    session_id = str(uuid.uuid4())
    turn = await running_turn(runner, "count slowly until I say stop", session_id)
    await wait_until(lambda: turn.io.accepts_runtime_input, what="the agent to take runtime input")
    steered = await viewer.intake.submit(submission("stop", session_id))
    assert isinstance(steered, Steered) and steered.turn is None and steered.message_id
    result = await asyncio.wait_for(turn.done, 20)
    assert result.result.endswith("Stopped because you said 'stop'.")


async def test_runtime_input_for_a_turn_that_takes_none_is_rejected_from_the_other_worker(workers):
    runner, viewer = workers(DemoAgent()), workers()
    session_id = str(uuid.uuid4())
    turn = await running_turn(runner, "count to 6 slowly", session_id)  # this count takes no runtime input
    with pytest.raises(RuntimeInputRejected):
        await viewer.intake.submit(submission("stop", session_id))
    assert (await asyncio.wait_for(turn.done, 20)).status == "done"  # unaffected


async def test_a_session_id_no_group_may_carry_is_never_sent(workers):
    runner = workers()
    assert await runner.bridge.forward("not a group name!", {"type": "INTERRUPT"}, signer=None) is False
    assert await runner.bridge.steer("not a group name!", "hi", signer=None) is None
    runner.bridge.outgoing("not a group name!", {"type": "thinking"})
    assert runner.bridge.sent == 0


async def test_an_unreachable_redis_is_one_warning_then_a_pause_and_turns_still_run(tmp_path, caplog):
    """FI4 in one process: every call fails fast (bounded by CALL_TIMEOUT), the bridge warns once and skips the
    layer for PAUSE seconds, and a local turn is unaffected."""
    caplog.set_level(logging.INFO, "connectonion.bridge")
    layer = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{free_port()}/0"])  # nothing listens there
    core = build_core(tmp_path, layer=layer)
    try:
        assert await core.bridge.forward("s1", {"type": "INTERRUPT"}, signer=None) is False
        assert await core.bridge.forward("s1", {"type": "INTERRUPT"}, signer=None) is False  # paused: not tried
        assert core.bridge.failures == 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "until the channel layer answers again" in warnings[0].getMessage()
        turn = await core.intake.submit(submission("still here", str(uuid.uuid4())))
        assert (await asyncio.wait_for(turn.done, 20)).result == "echo: still here"
    finally:
        await stop(core)


def test_no_redis_url_means_no_bridge():
    assert bridge_module.build(None) is None and bridge_module.build("") is None


def test_each_bridge_has_an_origin_of_its_own():
    layer = InMemoryChannelLayer()
    assert Bridge(layer).origin != Bridge(layer).origin
