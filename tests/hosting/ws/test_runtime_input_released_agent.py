"""Runtime input reaches a released ``connectonion.Agent`` that uses the released ``runtime_input`` plugin
(issue 17.7b): our ``TurnIO`` speaks the released WebSocketIO's runtime-input calls, so the plugin works
unchanged. A real host process; the Agent's model is a stub (tests/co_agents.py), no network."""

from __future__ import annotations

import pytest

from tests.support.ws import WS


@pytest.fixture(scope="module")
def host(module_hosts, tmp_path_factory):
    co_dir = tmp_path_factory.mktemp("co-steer")
    return module_hosts(
        "tests.co_agents:create_steerable_co_agent", env={"CO_TEST_CO_DIR": str(co_dir)}, name="steerable"
    )


async def test_a_runtime_input_steers_a_released_agent_with_the_runtime_input_plugin(host):
    async with await WS.open(host.ws_url) as ws:
        await ws.send({"type": "INPUT", "prompt": "keep working"})
        await ws.until("tool_result", timeout=30)
        await ws.send({"type": "INPUT", "prompt": "that is enough, stop", "input_id": "s1"})
        ack = (await ws.until(("RUNTIME_INPUT_ACK", "ERROR")))[-1]
        assert ack["type"] == "RUNTIME_INPUT_ACK" and ack["input_id"] == "s1", ack
        output = (await ws.until(("OUTPUT", "ERROR"), timeout=60))[-1]
        assert output["type"] == "OUTPUT" and output["result"] == "steered by: that is enough, stop", output
        await ws.send({"type": "INPUT", "prompt": "keep working"})  # the session is free: a new turn
        await ws.until("tool_result", timeout=30)
        await ws.send({"type": "INPUT", "prompt": "stop again"})
        assert (await ws.until(("RUNTIME_INPUT_ACK", "ERROR")))[-1]["type"] == "RUNTIME_INPUT_ACK"
        again = (await ws.until(("OUTPUT", "ERROR"), timeout=60))[-1]
        assert again["result"].endswith("stop again"), again
        assert again["session"]["turn"] == 2
