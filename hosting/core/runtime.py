"""The per-process runtime: config, agent, store, event log, pool, identity and trust gate.

Built lazily on first use (never in ``AppConfig.ready``), once per process.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError
from hosting.core import activity
from hosting.core.agents import AgentInfo, AgentSource
from hosting.core.bridge import Bridge
from hosting.core.bridge import build as build_bridge
from hosting.core.bridged_hub import BridgedHub
from hosting.core.config import HostConfig
from hosting.core.events import Hub
from hosting.core.intake import Intake
from hosting.core.model_errors import model_unavailable_cause
from hosting.core.pools import Pools
from hosting.core.throttle import Throttle
from hosting.core.turns import TurnManager
from sessions_app.eventlog import EventLog
from sessions_app.liveness import FileLiveness, Liveness, Sweeper
from sessions_app.store import SessionStore

log = logging.getLogger("connectonion")

_lock = threading.Lock()
_runtime: Runtime | None = None
_agent_override: Any = None
_trust_agent: Any = None
_loading_agent_module = False  # True while _build imports the user's module (which may call create_app)


@dataclass
class Runtime:
    config: HostConfig
    source: AgentSource
    info: AgentInfo
    store: SessionStore  # or sessions_app.dbstore.DatabaseStore (the same interface)
    eventlog: EventLog
    hub: Hub
    pools: Pools  # the one way to a thread: agents' pool and bookkeeping's
    turns: TurnManager
    identity: Any
    gate: Any
    throttle: Throttle
    started_at: float
    liveness: Liveness
    intake: Intake  # the one entry of a turn, for every door
    bridge: Bridge | None = None  # live events and answers across workers/replicas (redis_url)
    relay_state: str = "disabled"
    sweeper: Sweeper | None = None

    @property
    def address(self) -> str:
        return self.identity.address

    def uptime(self) -> int:
        return int(time.monotonic() - self.started_at)

    def maintain(self) -> None:
        """Drop expired results, their uploads and old replay events (start-up, then periodically)."""
        from hosting.core.uploads import purge_old_uploads

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

    def start_sweeper(self) -> None:
        """Every serving process records the turns of dead workers ``interrupted`` within seconds (D30)."""
        if self.sweeper is None:
            self.liveness.start()
            self.sweeper = Sweeper(self.store.recover_interrupted).start()


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


def session_store() -> SessionStore:
    """The running host's session store (``SESSIONS_STORE`` in the settings: the session browser's)."""
    return get_runtime().store


def loading_agent_module() -> bool:
    """True while the host imports the user's module: a ``create_app()`` it calls must not rebuild the host."""
    return _loading_agent_module


def reset_runtime() -> None:
    """Forget the runtime (tests that change settings)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.pools.shutdown(wait=False, cancel_futures=True)
        _runtime = None


def _store(config: HostConfig) -> tuple[Any, Liveness]:
    """The session store and the liveness of its running turns: JSONL + a lock file per process (one machine,
    the default), or PostgreSQL + a lease per process in the same database (replicas, ``store: postgres``)."""
    if config.store == "postgres":
        from sessions_app.dbstore import DatabaseStore
        from sessions_app.liveness import DatabaseLiveness

        lease = DatabaseLiveness(lease_seconds=config.lease_seconds, renew_every=min(2.0, config.lease_seconds / 3))
        return DatabaseStore(result_ttl=config.result_ttl, liveness=lease), lease
    liveness = FileLiveness(config.co_dir / "live")
    liveness.start()
    return SessionStore(config.results_path, result_ttl=config.result_ttl, liveness=liveness), liveness


def _eventlog(config: HostConfig, namespace: str) -> Any:
    """The replay log: SQLite in ``.co/`` (one machine, the default) or Redis Streams (``replay_log: redis``)."""
    if config.replay_log == "redis":
        from sessions_app.redislog import RedisEventLog

        return RedisEventLog(config.redis_url or "", namespace=namespace, ttl=config.result_ttl)
    return EventLog(config.co_dir / "events.sqlite3")


def _agent(config: HostConfig) -> tuple[AgentSource, Any]:
    """The agent's source (the embedding program's factory, else ``config.agent``) and its description; an agent
    that cannot be built fails the start with one clear line instead of a traceback."""
    global _loading_agent_module
    if _agent_override is not None:
        source = AgentSource(_agent_override)
    else:
        _loading_agent_module = True
        try:
            source = AgentSource.from_path(config.agent, search_dir=config.project_dir)
        finally:
            _loading_agent_module = False
    try:
        return source, source.describe()
    except Exception as exc:
        cause = model_unavailable_cause(exc)
        if cause is not None:
            raise ConfigError(f"agent model unavailable: {cause}") from exc
        raise ConfigError(f"the agent factory failed at start-up: {exc.__class__.__name__}: {exc}") from exc


def _build() -> Runtime:
    from django.conf import settings

    from trust.audit import record_decision
    from trust.gate import build_gate
    from trust.identity import load_identity

    config: HostConfig = settings.HOST
    config.co_dir.mkdir(parents=True, exist_ok=True)
    source, info = _agent(config)
    store, liveness = _store(config)
    identity = load_identity(config.co_dir, machine_dir=config.machine_dir)
    eventlog = _eventlog(config, identity.address)
    viewer_bytes = int(config.ws_send_buffer_mb * 1024 * 1024)
    bridge = build_bridge(config.redis_url)
    hub = Hub(max_queue_bytes=viewer_bytes) if bridge is None else BridgedHub(bridge, viewer_bytes)
    pools = Pools.build(config.pool_size)
    turns = TurnManager(config=config, source=source, store=store, eventlog=eventlog, hub=hub, pools=pools)
    if bridge is not None:
        bridge.bind(hub, turns)
    gate = build_gate(config, identity, trust=_trust_agent, settings=config.trust_settings, recorder=record_decision)
    activity.configure(
        config.logs_dir,
        config.name or info.name,
        secrets=(
            config.api_key or "",
            config.admin_token or "",
            config.secret_key or "",
            bytes(identity.signing_key).hex(),
        ),
    )
    throttle = Throttle(config, namespace=identity.address, pool=pools.bookkeeping)
    if config.tracing:
        from hosting.observability import tracing

        tracing.start(
            endpoint=config.otlp_endpoint, service_name=config.name or info.name, content=config.trace_content
        )
    intake = Intake(turns=turns, throttle=throttle, config=config, bridge=bridge)
    return Runtime(
        config,
        source,
        info,
        store,
        eventlog,
        hub,
        pools,
        turns,
        identity,
        gate,
        throttle,
        time.monotonic(),
        liveness,
        intake,
        bridge,
    )
