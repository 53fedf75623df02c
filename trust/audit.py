"""The audit of the trust gate's decisions: every decision a log line and a metric; the ones worth keeping a
``TrustDecision`` row (every refusal, an identified caller's acceptance once a minute per kind).

``trust.gate.Gate`` reports each decision here; ``record_decision`` is the recorder the host wires in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from common import metrics
from trust.identity import is_address

logger = logging.getLogger("connectonion.trust")

Recorder = Callable[..., None]
ACCEPT_RECORD_INTERVAL = 60.0  # seconds between stored acceptances of one caller (refusals: every one)


def record_decision(*, identity: str, level: str, decision: str, reason: str, transport: str) -> None:
    """Store one decision as a ``TrustDecision`` row. A storage failure is logged, never raised."""
    from django.db import DatabaseError

    from trust.models import TrustDecision

    try:
        TrustDecision.objects.create(
            identity=identity[:66],
            level=level[:16],
            decision=decision[:8],
            reason=reason[:300],
            transport=transport[:8],
        )
    except DatabaseError as exc:
        logger.warning("could not record trust decision: %s", exc)


def shown(address: Any) -> str:
    """A claimed address as it may appear in logs: attacker-controlled text never reaches them raw."""
    if address is None:
        return "anonymous"
    return address.lower() if is_address(address) else "invalid-address"


class DecisionAudit:
    """Where one gate's decisions go. Thread-safe, like the gate."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder
        self._recent: dict[tuple[str, str, str], float] = {}
        self._recent_lock = threading.Lock()

    def record(self, who: str, *, trust: str, decision: str, reason: str, transport: str) -> None:
        """Log and count one decision (``accept``, ``reject`` or ``error``) and store it if it is worth it."""
        logger.info(
            "trust decision: identity=%s level=%s decision=%s reason=%s transport=%s",
            who,
            trust,
            decision,
            reason,
            transport,
        )
        metrics.trust_decision(trust, decision)
        # Every decision goes to the log; the database keeps the ones worth auditing: every refusal, and an
        # identified caller's acceptance once a minute per kind (not each request of a busy client), never
        # the anonymous requests an open or careful host lets through.
        if self.recorder is None or (
            decision == "accept" and (who == "anonymous" or self._seen_lately((who, reason, transport)))
        ):
            return
        self.recorder(identity=who, level=trust, decision=decision, reason=reason, transport=transport)

    def _seen_lately(self, key: tuple[str, str, str], every: float = ACCEPT_RECORD_INTERVAL) -> bool:
        now = time.monotonic()
        with self._recent_lock:
            if len(self._recent) > 10_000:
                self._recent = {k: t for k, t in self._recent.items() if now - t < every}
            last = self._recent.get(key)
            if last is not None and now - last < every:
                return True
            self._recent[key] = now
            return False
