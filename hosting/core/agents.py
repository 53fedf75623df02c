"""One interface over what users hand us: a factory, a shared instance, or a plain function.

``AgentSource`` loads and describes the agent; ``AgentSource.checkout()`` yields a ``TurnAgent``
whose ``run()`` calls the user's ``input()`` with only the keywords it accepts, and reads the
released connectonion convention (``agent.io``, ``agent.current_session``) where it exists.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from hosting.core.events import TurnInterrupted


@dataclass(frozen=True)
class AgentInfo:
    """What the banner, ``/info`` and ANNOUNCE say about the agent."""

    name: str
    model: str
    tools: tuple[str, ...]
    system_prompt: str
    shared: bool


def import_target(path: str, *, search_dir: Path | None = None) -> Any:
    """Import ``module:attribute``. The search dir (the user's project) goes first on ``sys.path``.

    A missing module or attribute is reported exactly; an ``ImportError`` raised *inside* the
    user's module surfaces as itself.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"agent must be 'module:attribute' (got {path!r})")
    if search_dir is not None and str(search_dir) not in sys.path:
        sys.path.insert(0, str(search_dir))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                f"cannot import agent module {module_name!r} (looked in {search_dir or 'sys.path'})"
            ) from None
        raise
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


def _required_positional(fn: Callable[..., Any]) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0
    return sum(
        1
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


@lru_cache(maxsize=64)
def _accepted_keywords(cls: type, method: str = "input") -> frozenset[str] | None:
    """Keyword names ``cls.input`` accepts; None when it takes ``**kwargs``."""
    fn = getattr(cls, method, None)
    if fn is None:
        return frozenset()
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


class FunctionAgent:
    """Wraps ``def agent(prompt) -> str`` so it looks like an agent."""

    def __init__(self, fn: Callable[[str], Any]) -> None:
        self._fn = fn
        self.name = getattr(fn, "__name__", "agent")

    def input(self, prompt: str) -> Any:
        return self._fn(prompt)


def _tool_names(agent: Any) -> tuple[str, ...]:
    tools = getattr(agent, "tools", None)
    if tools is None:
        return ()
    names = getattr(tools, "names", None)
    if callable(names):
        with contextlib.suppress(Exception):
            return tuple(str(n) for n in names())
    try:
        items = list(tools)
    except TypeError:
        return ()
    return tuple(str(getattr(t, "name", None) or getattr(t, "__name__", None) or t) for t in items)


def _model_name(agent: Any) -> str:
    llm = getattr(agent, "llm", None)
    for candidate in (getattr(llm, "model", None), getattr(agent, "model", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    return "unknown"


class AgentSource:
    """The user's agent target, normalised. Thread-safe."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._info: AgentInfo | None = None
        if _is_agent(target):
            self._shared: Any | None = target
            self._factory: Callable[[], Any] | None = None
        elif callable(target) and _required_positional(target) == 0:
            self._shared, self._factory = None, target
        elif callable(target) and _required_positional(target) == 1:
            self._shared, self._factory = FunctionAgent(target), None
        else:
            raise ConfigError(
                f"agent target {target!r} must be a factory returning an agent, an agent with input(), "
                "or a function taking a prompt"
            )

    @classmethod
    def from_path(cls, path: str, *, search_dir: Path | None = None) -> AgentSource:
        return cls(import_target(path, search_dir=search_dir))

    @property
    def shared(self) -> bool:
        return self._shared is not None

    def new_instance(self) -> Any:
        """A fresh agent from the factory (or the shared one). Wraps plain functions."""
        if self._shared is not None:
            return self._shared
        assert self._factory is not None
        agent = self._factory()
        if not _is_agent(agent):
            if callable(agent) and _required_positional(agent) == 1:
                return FunctionAgent(agent)
            raise TypeError(f"the agent factory returned {type(agent).__name__}, which has no input() method")
        return agent

    def describe(self) -> AgentInfo:
        """Name, model and tools, read once from one instance (a factory is called once for it)."""
        if self._info is None:
            agent = self.new_instance()
            prompt = getattr(agent, "system_prompt", None)
            self._info = AgentInfo(
                name=str(getattr(agent, "name", None) or "agent"),
                model=_model_name(agent),
                tools=_tool_names(agent),
                system_prompt=prompt if isinstance(prompt, str) else "",
                shared=self.shared,
            )
        return self._info

    @contextlib.contextmanager
    def checkout(self) -> Iterator[TurnAgent]:
        """Yield the agent for one turn; a shared instance is held under a lock (one turn at a time)."""
        if self._shared is not None:
            with self._lock:
                yield TurnAgent(self._shared)
        else:
            yield TurnAgent(self.new_instance())


def _is_agent(obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "input", None))


class TurnAgent:
    """One agent instance, driven for one turn."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._accepts = _accepted_keywords(type(agent))

    def accepts(self, keyword: str) -> bool:
        return self._accepts is None or keyword in self._accepts

    @property
    def keeps_session(self) -> bool:
        """True for agents that maintain ``current_session`` themselves (connectonion style)."""
        return self.accepts("session") and hasattr(self.agent, "current_session")

    def run(self, prompt: str, *, session: dict[str, Any], images: list[str], io: Any) -> tuple[str, dict[str, Any]]:
        """Run one turn; returns ``(result text, new session)``. Exceptions propagate."""
        if io is not None and hasattr(self.agent, "io"):
            self.agent.io = io
        kwargs: dict[str, Any] = {}
        if self.accepts("session"):
            kwargs["session"] = session
        if images and self.accepts("images"):
            kwargs["images"] = images
        try:
            raw = self.agent.input(prompt, **kwargs)
        except TurnInterrupted as exc:
            exc.partial = self._partial_result(session)  # D29: the cancelled turn's OUTPUT carries it
            raise
        finally:
            if io is not None and hasattr(self.agent, "io"):
                self.agent.io = None
        result = coerce_result(raw)
        current = getattr(self.agent, "current_session", None) if self.keeps_session else None
        if isinstance(current, dict) and current.get("messages") is not None:
            new_session = dict(current)
        else:
            new_session = append_exchange(session, prompt, result, images)
        return result, new_session

    def _partial_result(self, before: dict[str, Any]) -> str:
        """What an interrupted turn had said so far: the last assistant text it added, or ``""``."""
        current = getattr(self.agent, "current_session", None) if self.keeps_session else None
        if not isinstance(current, dict) or not isinstance(current.get("messages"), list):
            return ""
        added = current["messages"][len(before.get("messages") or []) :]
        for message in reversed(added):
            if not isinstance(message, dict) or message.get("role") != "assistant":
                continue
            if isinstance(message.get("content"), str) and message["content"]:
                return message["content"]
        return ""


def coerce_result(raw: Any) -> str:
    """Agents may return anything; clients always get text."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    try:
        return json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(raw)


def append_exchange(session: dict[str, Any], prompt: str, result: str, images: list[str]) -> dict[str, Any]:
    """For agents that keep no session: record the exchange so multi-turn still works."""
    new = dict(session)
    messages = list(new.get("messages") or [])
    if images:
        content: Any = [{"type": "text", "text": prompt}] + [
            {"type": "image_url", "image_url": {"url": image}} for image in images
        ]
    else:
        content = prompt
    messages.append({"role": "user", "content": content})
    messages.append({"role": "assistant", "content": result})
    new["messages"] = messages
    new.setdefault("trace", [])
    return new
