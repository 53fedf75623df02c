"""The channel layer's calls as the bridge makes them: each bounded by ``CALL_TIMEOUT`` (a frozen Redis counts as a
failure, not a wait), none raising. A failure is counted, warned once per outage and pauses further calls for
``PAUSE`` seconds; the first call that succeeds again says so."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("connectonion.bridge")

PAUSE = 5.0  # after a failed send or group change, skip the channel layer this long (one warning per outage)
CALL_TIMEOUT = 2.0  # a send or group change Redis has not answered by then failed (a frozen Redis: FI5)


class LayerCalls:
    """``group_send``, ``group_add``/``group_discard`` and ``send`` on one channel layer, with the bridge's counters."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.sent = 0
        self.failures = 0
        self._paused_until = 0.0
        self._down = False

    async def group_send(self, group: str, message: dict[str, Any]) -> bool:
        if self.paused():
            return False
        try:
            await asyncio.wait_for(self.layer.group_send(group, message), CALL_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a failed group_send is logged and counted
            self.failed(f"group_send to {group}", exc)
            return False
        self._ok()
        self.sent += 1
        return True

    async def group_change(self, action: str, group: str, channel: str) -> bool:
        """``group_add`` (action ``"add"``) or ``group_discard`` of ``channel``."""
        if self.paused():
            return False
        change = self.layer.group_add if action == "add" else self.layer.group_discard
        try:
            await asyncio.wait_for(change(group, channel), CALL_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a failed group change is logged and counted
            self.failed(f"group_{action} {group}", exc)
            return False
        self._ok()
        return True

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self.layer.send(channel, message), CALL_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a failed send is logged and counted, never raised into the turn
            self.failed(f"send to {channel}", exc)

    def paused(self) -> bool:
        return self._down and time.monotonic() < self._paused_until

    def failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        self._paused_until = time.monotonic() + PAUSE
        if not self._down:
            self._down = True
            log.warning(
                "bridge: %s failed (%s); live events cross workers through the event log until the "
                "channel layer answers again (next try in %.0f s)",
                what,
                exc,
                PAUSE,
            )

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.info("bridge: the channel layer answers again; live events cross workers through it")
