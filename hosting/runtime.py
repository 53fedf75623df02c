"""The per-process runtime: config, agent, store, event log, pool, identity and trust gate.

Built lazily on first use (never in ``AppConfig.ready``), once per process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hosting import activity
from hosting.agents import AgentInfo, AgentSource
from hosting.config import HostConfig
from hosting.errors import ConfigError
from hosting.events import Hub
from hosting.throttle import Throttle
from hosting.turns import TurnManager
from sessions_app.eventlog import EventLog
from sessions_app.store import SessionStore

log = logging.getLogger("connectonion")

_lock = threading.Lock()
_runtime: Runtime | None = None
_agent_override: Any = None
_trust_agent: Any = None


@dataclass
class Runtime:
    config: HostConfig
    source: AgentSource
    info: AgentInfo
    store: SessionStore
    eventlog: EventLog
    hub: Hub
    pool: ThreadPoolExecutor
    turns: TurnManager
    identity: Any
    gate: Any
    throttle: Throttle
    started_at: float
    relay_state: str = "disabled"

    @property
    def address(self) -> str:
        return self.identity.address

    def uptime(self) -> int:
        return int(time.monotonic() - self.started_at)

    def maintain(self) -> None:
        """Drop expired results, their uploads and old replay events (start-up, then periodically)."""
        from hosting.uploads import purge_old_uploads

        ttl = self.config.result_ttl
        self.store.compact()
        purge_old_uploads(self.config.uploads_dir, older_than=ttl)
        self.eventlog.purge(older_than=time.time() - 2 * ttl)

    def start_maintenance(self, every: float | None = None) -> None:
        """Run ``maintain`` periodically on a daemon thread (never on the event loop): hourly, or every quarter of
        ``result_ttl`` when that is shorter (at least a minute), so expired results, their uploads and their
        index entries are gone soon after they expire, whatever the TTL."""
        if every is None:
            every = min(3600.0, max(60.0, self.config.result_ttl / 4))

        def loop() -> None:
            while True:
                time.sleep(every)
                try:
                    self.maintain()
                except Exception:
                    log.exception("periodic maintenance failed")

        threading.Thread(target=loop, name="maintenance", daemon=True).start()


def set_agent(target: Any) -> None:
    """Use this Python object as the agent (``host(create_agent)`` in the same process)."""
    global _agent_override, _runtime
    with _lock:
        _agent_override = target
        _runtime = None


def set_trust_agent(agent: Any) -> None:
    """A custom trust agent object given to ``host(trust=...)`` (it cannot travel through config)."""
    global _trust_agent, _runtime
    with _lock:
        _trust_agent = agent
        _runtime = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = _build()
    activity.ensure_attached()
    return _runtime


def reset_runtime() -> None:
    """Forget the runtime (tests that change settings)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.pool.shutdown(wait=False, cancel_futures=True)
        _runtime = None


def _build() -> Runtime:
    from django.conf import settings

    from trust.gate import build_gate, record_decision
    from trust.identity import load_identity
    from trust.policy import trust_settings

    config: HostConfig = settings.HOST
    config.co_dir.mkdir(parents=True, exist_ok=True)
    source = (
        AgentSource(_agent_override)
        if _agent_override is not None
        else AgentSource.from_path(config.agent, search_dir=config.project_dir)
    )
    try:
        info = source.describe()
    except Exception as exc:  # a clear start-up line instead of a traceback
        raise ConfigError(f"the agent factory failed at start-up: {exc.__class__.__name__}: {exc}") from exc
    store = SessionStore(config.results_path, result_ttl=config.result_ttl)
    eventlog = EventLog(config.co_dir / "events.sqlite3")
    hub = Hub()
    pool = ThreadPoolExecutor(max_workers=config.pool_size, thread_name_prefix="agent")
    turns = TurnManager(config=config, source=source, store=store, eventlog=eventlog, hub=hub, pool=pool)
    identity = load_identity(config.co_dir, machine_dir=config.machine_dir)
    gate = build_gate(config, identity, trust=_trust_agent, settings=trust_settings(os.environ),
                      recorder=record_decision)
    activity.configure(config.logs_dir, config.name or info.name, secrets=(
        config.api_key or "", config.admin_token or "", config.secret_key or "",
        bytes(identity.signing_key).hex()))
    throttle = Throttle(config, namespace=identity.address)
    return Runtime(config, source, info, store, eventlog, hub, pool, turns, identity, gate, throttle,
                   time.monotonic())
