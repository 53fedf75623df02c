"""Trivial agents for the benchmarks, usable by our host and by the released connectonion ``host()``.

Both hosts get the same object: a real ``connectonion.Agent`` whose LLM answers at once without a
network call, so what is measured is the host, not a model.

* ``instant_factory``: answers ``ok`` immediately.
* ``sleep_factory``: a prompt ``sleep N`` makes the LLM call block the thread for N seconds (like a real
  provider call would), then answers ``slept N``; any other prompt answers at once.
* ``flood_factory`` (ours only, for ``ws_bench.py --resume``): ``flood N`` emits N events in one turn.
"""

from __future__ import annotations

import time
from typing import Any

from connectonion import Agent
from connectonion.core.llm import LLM, LLMResponse


class InstantLLM(LLM):
    """An LLM that answers without a network call; ``sleep N`` as the last user message blocks N seconds."""

    def __init__(self) -> None:
        self.model = "bench/instant"

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> LLMResponse:
        last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "") or ""
        text = last if isinstance(last, str) else str(last)
        words = text.split()
        if len(words) == 2 and words[0] == "sleep":
            seconds = min(float(words[1]), 30.0)
            time.sleep(seconds)
            return LLMResponse(content=f"slept {words[1]}", tool_calls=[], raw_response=None)
        return LLMResponse(content="ok", tool_calls=[], raw_response=None)

    def structured_complete(self, messages, output_schema):  # pragma: no cover - never asked for
        raise NotImplementedError


def _agent(name: str) -> Agent:
    return Agent(name, llm=InstantLLM(), log=False, quiet=True)


def instant_factory() -> Agent:
    return _agent("bench-instant")


def sleep_factory() -> Agent:
    return _agent("bench-sleep")


class FloodAgent:
    """The prompt ``flood N`` emits N tiny events in one turn (N/2 tool_call + tool_result pairs) at once.

    Not a connectonion Agent: it drives ``io`` directly, so the figure is the host's write and replay cost.
    """

    name = "bench-flood"
    model = "bench/flood"
    tools = ["step"]

    def __init__(self) -> None:
        self.io: Any = None

    def input(self, prompt: str) -> str:
        words = prompt.split()
        count = int(words[1]) if len(words) == 2 and words[0] == "flood" and words[1].isdigit() else 0
        for i in range(count // 2):
            if self.io is not None:
                self.io.send(
                    {"type": "tool_call", "tool_id": f"c{i}", "name": "step", "args": {"i": i}, "status": "in_progress"}
                )
                self.io.send(
                    {
                        "type": "tool_result",
                        "tool_id": f"c{i}",
                        "name": "step",
                        "status": "completed",
                        "result": str(i),
                        "timing_ms": 0,
                    }
                )
        return f"flooded {count}"


def flood_factory() -> FloodAgent:
    return FloodAgent()


def soak_factory() -> Any:
    """The demo agent (tools, streamed events, ``save a note: x`` asks approval) plus two bench prompts:
    ``sleep N`` blocks the turn's thread N seconds first (a slow provider), ``fail`` raises (a broken agent)."""
    from hosting.demo import DemoAgent

    class SoakAgent(DemoAgent):
        def input(self, prompt: str, session: dict[str, Any] | None = None, images: list[str] | None = None) -> str:
            words = prompt.split()
            if len(words) == 2 and words[0] == "sleep":
                time.sleep(min(float(words[1]), 30.0))
            elif prompt == "fail":
                raise RuntimeError("soak: a deliberately failing turn")
            return super().input(prompt, session=session, images=images)

    return SoakAgent()
