"""The turn core without a server: real parts throughout (a JSONL store, the SQLite replay log, a hub, the two
pools, the throttle and the intake), so a unit test drives exactly what every door calls."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hosting.core.agents import AgentSource
from hosting.core.bridge import Bridge, BridgedHub
from hosting.core.config import HostConfig
from hosting.core.events import Hub
from hosting.core.intake import Intake
from hosting.core.pools import Pools
from hosting.core.throttle import Throttle
from hosting.core.turns import TurnManager
from sessions_app.eventlog import EventLog
from sessions_app.store import SessionStore
from tests.agents import EchoAgent


@dataclass
class Core:
    intake: Intake
    turns: TurnManager
    throttle: Throttle
    store: SessionStore
    config: HostConfig
    pools: Pools
    hub: Hub
    bridge: Bridge | None = None


def build_core(folder: Path, agent: Any = None, *, layer: Any = None, **config: Any) -> Core:
    """A core in ``folder`` (its ``.co/`` made here) around ``agent`` (the echo agent by default); ``config``
    fields override HostConfig's defaults. With a channel ``layer`` it is one worker of several: its hub is
    bridged over that layer (``hosting.core.bridge``), as ``--workers N --redis-url`` builds it. Shut its pools
    down after use (``core_of`` does)."""
    settings = HostConfig(project_dir=folder, relay_url=None, **config)
    pools = Pools.build(4, 2)
    store = SessionStore(settings.results_path)
    bridge = Bridge(layer) if layer is not None else None
    hub = BridgedHub(bridge, int(settings.ws_send_buffer_mb * 1024 * 1024)) if bridge is not None else Hub()
    turns = TurnManager(
        config=settings,
        source=AgentSource(agent if agent is not None else EchoAgent()),
        store=store,
        eventlog=EventLog(settings.co_dir / "events.sqlite3"),
        hub=hub,
        pools=pools,
    )
    if bridge is not None:
        bridge.bind(hub, turns)
    throttle = Throttle(settings, pool=pools.bookkeeping)
    intake = Intake(turns=turns, throttle=throttle, config=settings, bridge=bridge)
    return Core(intake, turns, throttle, store, settings, pools, hub, bridge)


@contextmanager
def core_of(folder: Path, agent: Any = None, **config: Any) -> Iterator[Core]:
    """:func:`build_core`, its pools shut down on exit."""
    core = build_core(folder, agent, **config)
    try:
        yield core
    finally:
        core.pools.shutdown(wait=True)


async def stop(core: Core) -> None:
    """Stop a core's bridge (on the loop it runs on) and its pools."""
    if core.bridge is not None:
        await core.bridge.stop()
    core.pools.shutdown(wait=True)
