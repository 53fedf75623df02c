"""The host's Prometheus metrics (``GET /metrics``), shared by every worker through prometheus-client's
multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (``runhost`` sets it to ``.co/metrics/``).

Every recording function here is exception-safe: a metrics failure is logged once and never reaches the
request, the frame or the turn that caused it.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client import registry as default_registry

log = logging.getLogger("connectonion")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TRANSPORTS = ("http", "ws", "relay")
MAX_LABEL_VALUES = 64  # distinct tool or model names kept per family; any more count as "other"

_TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

turns_started = Counter("connectonion_turns_started", "Turns started, by transport.", ["transport"])
turns_ended = Counter(
    "connectonion_turns_ended", "Turns ended, by transport and final status.", ["transport", "status"]
)
turn_seconds = Histogram(
    "connectonion_turn_duration_seconds",
    "Turn duration, start to terminal frame.",
    ["transport", "status"],
    buckets=_TURN_BUCKETS,
)
first_event_seconds = Histogram(
    "connectonion_turn_first_event_seconds",
    "Time from a turn's start to its first streamed event.",
    ["transport"],
    buckets=_TURN_BUCKETS,
)
tool_calls = Counter("connectonion_tool_calls", "Finished tool calls, by tool and status.", ["tool", "status"])
tool_seconds = Histogram("connectonion_tool_duration_seconds", "Tool call duration.", ["tool"], buckets=_TURN_BUCKETS)
model_calls = Counter(
    "connectonion_model_calls", "Model calls the agent reported, by model and status.", ["model", "status"]
)
model_seconds = Histogram(
    "connectonion_model_duration_seconds", "Model call duration.", ["model"], buckets=_TURN_BUCKETS
)
model_tokens = Counter("connectonion_model_tokens", "Tokens the agent reported, by model and kind.", ["model", "kind"])
trust_decisions = Counter(
    "connectonion_trust_decisions", "Trust gate decisions, by trust level and outcome.", ["level", "outcome"]
)
refusals = Counter(
    "connectonion_rate_limit_refusals",
    "Refusals by a limit: rate (token bucket), turns (concurrent turns), sockets (max_ws_per_ip).",
    ["limit"],
)
websockets_open = Gauge("connectonion_websockets_open", "Open /ws connections.", multiprocess_mode="livesum")
relay_up = Gauge("connectonion_relay_link_up", "1 while the relay link is connected.", multiprocess_mode="livemax")
relay_changes = Counter("connectonion_relay_link_changes", "Relay link state changes, by new state.", ["state"])
pool_queued = Gauge("connectonion_pool_queued_turns", "Turns waiting for an agent thread.", multiprocess_mode="livesum")
turns_in_flight = Gauge(
    "connectonion_turns_in_flight", "Turns running in an agent thread.", multiprocess_mode="livesum"
)
store_write_seconds = Histogram(
    "connectonion_store_write_seconds", "Result store (JSONL) append latency.", buckets=_FAST_BUCKETS
)
replay_write_seconds = Histogram(
    "connectonion_replay_log_write_seconds", "Replay log (SQLite) batch commit latency.", buckets=_FAST_BUCKETS
)

F = TypeVar("F", bound=Callable[..., Any])
_warned: set[str] = set()


def safe(fn: F) -> F:
    """Never raise: a failure is logged once per function, then ignored (a metric must not drop a response)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            if fn.__name__ not in _warned:
                _warned.add(fn.__name__)
                log.exception("metrics: %s failed (further failures are not logged)", fn.__name__)
            return None

    return wrapper  # type: ignore[return-value]


class BoundedLabel:
    """Keeps a label's distinct values bounded: an agent (or a model asking for a tool that does not exist)
    cannot grow the metric files without end."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: Any) -> str:
        text = str(value)[:100] if value not in (None, "") else "unknown"
        if text in self._seen:
            return text
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(text)
                return text
        return "other"


tool_label = BoundedLabel()
model_label = BoundedLabel()


def transport_label(transport: str) -> str:
    return transport if transport in TRANSPORTS else "other"


# -- recording (called from the core through hosting.observability) -------------------------------------


@safe
def trust_decision(level: str, outcome: str) -> None:
    trust_decisions.labels(level, outcome).inc()


@safe
def refused(limit: str) -> None:
    refusals.labels(limit).inc()


@safe
def websocket_opened() -> None:
    websockets_open.inc()


@safe
def websocket_closed() -> None:
    websockets_open.dec()


@safe
def relay_state(state: str) -> None:
    kind = state.split(":", 1)[0].strip() or "unknown"
    relay_changes.labels(kind).inc()
    relay_up.set(1 if state == "connected" else 0)


@safe
def store_write(seconds: float) -> None:
    store_write_seconds.observe(seconds)


@safe
def replay_write(seconds: float) -> None:
    replay_write_seconds.observe(seconds)


# -- exposition ------------------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def render() -> bytes:
    """The exposition text: every worker's values (multiprocess mode) or this process's."""
    if multiprocess_dir() is None:
        return generate_latest(default_registry.REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def prepare_directory(co_dir: Path, environ: dict[str, str] | os._Environ[str]) -> Path:
    """Empty ``.co/metrics/`` and point ``PROMETHEUS_MULTIPROC_DIR`` at it (before any worker starts).

    Values from an earlier run would otherwise add up with this one's. An operator's own
    ``PROMETHEUS_MULTIPROC_DIR`` is respected (and left as it is).
    """
    given = environ.get(MULTIPROC_ENV)
    path = Path(given) if given else co_dir / "metrics"
    path.mkdir(parents=True, exist_ok=True)
    if not given:
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        environ[MULTIPROC_ENV] = str(path)
    return path


@safe
def worker_exited(pid: int) -> None:
    """A worker died: its live gauges (open sockets, queued and running turns) stop counting."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)
