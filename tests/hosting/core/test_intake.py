"""The one core entry of a turn (``hosting.core.intake``), without a server: the order every door relies on.

Real parts throughout (the turn manager with a JSONL store, the SQLite replay log, the hub, a thread pool and
the throttle); only the door is missing: each test builds the ``Submission`` a door would.
"""

from __future__ import annotations

import asyncio

import pytest

from common.errors import (
    AgentFailed,
    BadRequest,
    PromptRequired,
    RateLimited,
    RuntimeInputRejected,
    SessionBusy,
)
from hosting.core.intake import TEXT_ONLY, Steered, Submission
from hosting.core.pools import Pools
from hosting.core.throttle import Caller
from tests.agents import FailingAgent
from tests.support.core import Core, build_core

ALICE = Caller.of(None, "10.0.0.1")
BUSY = "session already has a running agent"
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def build(tmp_path, agent=None, **limits) -> tuple[Core, Pools]:
    built = build_core(tmp_path, agent, **limits)
    return built, built.pools


@pytest.fixture
def core(tmp_path):
    built, pool = build(tmp_path, rate_limit_burst=2, rate_limit_per_minute=1, max_turns_per_identity=1)
    yield built
    pool.shutdown(wait=True)


def submission(prompt="hi", caller=ALICE, **fields) -> Submission:
    payload = {} if prompt is None else {"prompt": prompt}
    return Submission(payload=payload, signer=None, level="stranger", caller=caller, **fields)


async def test_a_valid_submission_runs_and_is_recorded(core):
    result = await core.intake.run(submission("hello"))
    assert (result.status, result.result) == ("done", "echo: hello")
    record = await asyncio.to_thread(core.store.get, result.session_id)
    assert (record.status, record.prompt, record.data["result"]) == ("done", "hello", "echo: hello")


async def test_the_rate_limit_comes_before_input_validation(core):
    await core.intake.run(submission())
    await core.intake.run(submission())  # the burst of 2 is spent
    with pytest.raises(RateLimited):
        await core.intake.run(submission(None))  # refused for its rate, not for its missing prompt


async def test_the_turn_holds_come_before_input_validation(core):
    held = core.throttle.hold_turn(ALICE)  # the caller's one running turn
    try:
        with pytest.raises(RateLimited):
            await core.intake.run(submission(None))
    finally:
        held()


async def test_invalid_input_takes_no_hold_with_it(core):
    with pytest.raises(PromptRequired):
        await core.intake.run(submission(None))
    with pytest.raises(BadRequest, match="prompt must be a string"):
        await core.intake.run(submission(7))
    core.throttle.hold_turn(ALICE)()  # the one slot is free again (else this raises RateLimited)


async def test_a_busy_session_is_refused_before_the_rate_is_counted(core):
    turn = await core.intake.submit(submission("first"))
    await turn.done  # the record is done; now mark the session live on the loop, as a running turn does
    core.turns.active[turn.session_id] = turn
    try:
        for _ in range(3):  # more than the burst: none of these takes a token
            with pytest.raises(RuntimeInputRejected, match=BUSY):  # its agent takes no runtime input
                await core.intake.submit(submission(session_id=turn.session_id))
            with pytest.raises(SessionBusy, match=BUSY):  # someone else's turn
                await core.intake.submit(
                    Submission(
                        payload={"prompt": "hi"},
                        signer="0xother",
                        level="stranger",
                        caller=Caller.of("0xother", None),
                        session_id=turn.session_id,
                    )
                )
    finally:
        del core.turns.active[turn.session_id]
    assert (await core.intake.run(submission())).status == "done"  # the burst's second token was still there


async def test_the_doors_session_is_used_when_the_input_names_none(core):
    first = await core.intake.run(submission("one"))
    again = await core.intake.run(submission("two", client_session=first.session))
    assert again.session_id == first.session_id
    assert [m["content"] for m in again.session["messages"] if m["role"] == "user"] == ["one", "two"]


async def test_ready_runs_once_the_input_is_valid_and_a_refusal_there_releases_the_hold(core):
    seen = []

    async def ready(request):
        seen.append(request.prompt)

    with pytest.raises(PromptRequired):
        await core.intake.submit(submission(None), ready=ready)
    assert seen == []  # never for an invalid input
    turn = await core.intake.submit(submission("go"), ready=ready)
    assert seen == ["go"] and (await turn.done).result == "echo: go"

    async def refuse(request):
        raise BadRequest("the door changed its mind")

    with pytest.raises(BadRequest, match="changed its mind"):
        await core.intake.submit(submission("x", caller=Caller.of(None, "10.0.0.2")), ready=refuse)
    core.throttle.hold_turn(Caller.of(None, "10.0.0.2"))()  # its hold was given back


async def test_a_failed_turn_raises_its_public_error_and_frees_the_hold(tmp_path):
    built, pool = build(tmp_path, FailingAgent(), max_turns_per_identity=1)
    try:
        with pytest.raises(AgentFailed):
            await built.intake.run(submission())
        built.throttle.hold_turn(ALICE)()  # released when the agent thread was done
    finally:
        pool.shutdown(wait=True)


async def test_a_signed_submission_carries_the_gates_verdict_into_the_record(core):
    class Admitted:  # the shape of trust.decision.Admission that Submission.of reads
        signer, level, payload = "0xabc", "contact", {"prompt": "signed hi"}

    result = await core.intake.run(Submission.of(Admitted(), Caller.of("0xabc", None)))
    record = await asyncio.to_thread(core.store.get, result.session_id)
    assert record.owner == "0xabc"
    assert result.session["requester"] == {"address": "0xabc", "level": "contact"}


async def test_input_to_a_running_turn_that_takes_it_is_steered_without_a_turn_hold(tmp_path):
    core, pool = build(tmp_path, rate_limit_burst=3, rate_limit_per_minute=1, max_turns_per_identity=1)
    turn = await core.intake.submit(submission("first"))
    await turn.done
    turn.io.open_runtime_inputs()  # as the agent's runtime_input plugin does, while its turn runs
    core.turns.active[turn.session_id] = turn
    held = core.throttle.hold_turn(ALICE)  # the caller's one turn slot is taken: a steer needs none
    try:
        with pytest.raises(BadRequest, match=TEXT_ONLY):
            await core.intake.submit(
                Submission(
                    payload={"prompt": "look", "images": [PIXEL]},
                    signer=None,
                    level="stranger",
                    caller=ALICE,
                    session_id=turn.session_id,
                )
            )
        steered = await core.intake.submit(
            Submission(
                payload={"prompt": "also this", "input_id": "i2"},
                signer=None,
                level="stranger",
                caller=ALICE,
                session_id=turn.session_id,
            )
        )
        assert isinstance(steered, Steered) and steered.turn is turn and steered.input_id == "i2"
        assert turn.io.pop_runtime_inputs() == [
            {"type": "RUNTIME_INPUT", "id": steered.message_id, "prompt": "also this"}
        ]
        with pytest.raises(RateLimited):  # the same rate limit as any input (the burst of 3 is spent now)
            await core.intake.submit(submission("more", session_id=turn.session_id))
    finally:
        held()
        del core.turns.active[turn.session_id]
        pool.shutdown(wait=True)
