"""Agents for tests that need more than tests/agents.py: a real ``connectonion.Agent`` on a stub LLM
(no network, PROTOCOL Appendix B) and a factory that works once, then raises."""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from typing import Any

_calls = {"n": 0}


def flaky_factory():
    """Works for the host's start-up description, then raises on every request."""
    from tests.agents import EchoAgent

    _calls["n"] += 1
    if _calls["n"] > 1:
        raise RuntimeError("factory broke on request")
    return EchoAgent()


def _stub_llm():
    from connectonion.core.llm import LLM, LLMResponse, ToolCall

    class StubLLM(LLM):
        """Rules instead of a model: 'add A and B' calls the add tool; 'my name is X' / 'what is my name'
        answer from the conversation the Agent passes in (so multi-turn is really tested)."""

        def __init__(self) -> None:
            self.model = "stub/rules"

        def complete(self, messages: list[dict[str, Any]], tools: Any = None, **kw: Any) -> LLMResponse:
            last = messages[-1]
            if last.get("role") == "tool":
                return LLMResponse(content=f"the sum is {last['content']}", tool_calls=[], raw_response=None)
            prompt = str(last.get("content", ""))
            m = re.match(r"add (\d+) and (\d+)", prompt)
            if m:
                call = ToolCall(
                    name="add", arguments={"a": int(m[1]), "b": int(m[2])}, id=f"call_{uuid.uuid4().hex[:8]}"
                )
                return LLMResponse(content=None, tool_calls=[call], raw_response=None)
            if "what is my name" in prompt:
                said = [str(x.get("content")) for x in messages if x.get("role") == "user"]
                names = [n for s in said for n in re.findall(r"my name is (\w+)", s)]
                answer = f"your name is {names[-1]}" if names else "I do not know your name"
                return LLMResponse(content=answer, tool_calls=[], raw_response=None)
            return LLMResponse(content=f"you said: {prompt}", tool_calls=[], raw_response=None)

        def structured_complete(self, messages: list[dict[str, Any]], output_schema: Any, **kw: Any) -> Any:
            return output_schema.model_validate(json.loads("{}"))

    return StubLLM()


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def create_co_agent():
    from connectonion import Agent

    co_dir = os.environ.get("CO_TEST_CO_DIR") or tempfile.mkdtemp(prefix="co-agent-")
    return Agent("co-stub", llm=_stub_llm(), tools=[add], log=False, quiet=True, co_dir=co_dir)


def _steerable_llm():
    from connectonion.core.llm import LLM, LLMResponse, ToolCall
    from connectonion.useful_plugins import RUNTIME_INPUT_FRAME_PREFIX

    class SteerableLLM(LLM):
        """'keep working' calls the ``step`` tool until a runtime input (a user message framed by the released
        ``runtime_input`` plugin) is in the conversation; then it answers with what the user sent."""

        def __init__(self) -> None:
            self.model = "stub/steerable"

        def complete(self, messages: list[dict[str, Any]], tools: Any = None, **kw: Any) -> LLMResponse:
            steered: list[str] = []
            for m in messages:  # this turn's: the framed user messages after its prompt
                text = str(m.get("content", "")) if m.get("role") == "user" else None
                if text is not None and text.startswith(RUNTIME_INPUT_FRAME_PREFIX):
                    steered.append(text[len(RUNTIME_INPUT_FRAME_PREFIX) :])
                elif text is not None:
                    steered = []
            if steered:
                return LLMResponse(content="steered by: " + " | ".join(steered), tool_calls=[], raw_response=None)
            call = ToolCall(name="step", arguments={}, id=f"call_{uuid.uuid4().hex[:8]}")
            return LLMResponse(content=None, tool_calls=[call], raw_response=None)

        def structured_complete(self, messages: list[dict[str, Any]], output_schema: Any, **kw: Any) -> Any:
            return output_schema.model_validate(json.loads("{}"))

    return SteerableLLM()


def step() -> str:
    """One slow unit of work (the agent keeps calling it until told otherwise)."""
    import time

    time.sleep(0.3)
    return "worked a bit"


def create_steerable_co_agent():
    """A released ``connectonion.Agent`` with the released ``runtime_input`` plugin: it takes runtime input."""
    from connectonion import Agent
    from connectonion.useful_plugins import runtime_input

    co_dir = os.environ.get("CO_TEST_CO_DIR") or tempfile.mkdtemp(prefix="co-agent-")
    return Agent(
        "co-steerable",
        llm=_steerable_llm(),
        tools=[step],
        plugins=[runtime_input],
        log=False,
        quiet=True,
        co_dir=co_dir,
        max_iterations=60,
    )
