"""Small real agents for tests (no mocks): echo, slow, failing, counting, odd results."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class EchoAgent:
    """Answers ``echo: <prompt>``; keeps no session of its own (the host records the exchange)."""

    def __init__(self) -> None:
        self.name = "echo"
        self.model = "test/echo"
        self.tools: list[Any] = []

    def input(self, prompt: str) -> str:
        return f"echo: {prompt}"


def echo_factory() -> EchoAgent:
    count_file = os.environ.get("CO_TEST_FACTORY_COUNT")
    if count_file:
        with open(count_file, "a") as fh:
            fh.write("x")
    return EchoAgent()


class SlowAgent(EchoAgent):
    def __init__(self) -> None:
        super().__init__()
        self.name = "slow"

    def input(self, prompt: str) -> str:
        seconds = float(prompt.split()[-1]) if prompt.split()[-1].replace(".", "", 1).isdigit() else 1.0
        time.sleep(min(seconds, 30))
        return f"slept {seconds}"


def slow_factory() -> SlowAgent:
    return SlowAgent()


class FailingAgent(EchoAgent):
    def input(self, prompt: str) -> str:
        raise RuntimeError("secret internal detail: boom")


def failing_factory() -> FailingAgent:
    return FailingAgent()


def raising_factory() -> EchoAgent:
    raise RuntimeError("factory broke")


def plain_function(prompt: str) -> str:
    """A plain function returned by a factory is wrapped automatically."""
    return prompt.upper()


def function_factory():
    return plain_function


class OddResultAgent(EchoAgent):
    def input(self, prompt: str) -> Any:
        return {"dict": [1, 2]} if prompt == "dict" else (None if prompt == "none" else b"bytes")


def odd_factory() -> OddResultAgent:
    return OddResultAgent()


def memory_marker(path: str) -> Path:
    return Path(path)


class FloodAgent(EchoAgent):
    """``flood N SIZE``: streams N events of SIZE characters each, then answers ``flooded N``; else echoes."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "flood"
        self.io: Any = None

    def input(self, prompt: str) -> str:
        words = prompt.split()
        if len(words) != 3 or words[0] != "flood" or self.io is None:
            return super().input(prompt)
        count, size = int(words[1]), int(words[2])
        for number in range(count):
            self.io.send({"type": "chunk", "number": number, "text": "x" * size})
        return f"flooded {count}"


def flood_factory() -> FloodAgent:
    return FloodAgent()


class GatedAgent(EchoAgent):
    """``wait PATH``: holds its thread until the file PATH exists (the test opens the gate; 60 s at most),
    then answers ``opened``; else echoes. For tests of what must go on while every agent thread is busy."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "gated"

    def input(self, prompt: str) -> str:
        words = prompt.split()
        if len(words) != 2 or words[0] != "wait":
            return super().input(prompt)
        deadline = time.monotonic() + 60
        while not Path(words[1]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "opened"


def gated_factory() -> GatedAgent:
    return GatedAgent()
