"""The hub a process uses when the Redis bridge is on (``hosting.core.bridge``): the in-process hub, plus the hooks
that send local events out and join or leave a session's group as its first viewer comes and its last goes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hosting.core.events import Hub, Subscription

if TYPE_CHECKING:
    from hosting.core.bridge import Bridge


class BridgedHub(Hub):
    """The in-process hub plus the bridge hooks: local publishes go out, first/last viewers join/leave."""

    joins_turns = True

    def __init__(self, bridge: Bridge, max_queue_bytes: int) -> None:
        super().__init__(max_queue_bytes)
        self.bridge = bridge

    def subscribe(self, session_id: str) -> Subscription:
        first = not self.viewers(session_id)
        sub = super().subscribe(session_id)
        if first:
            self.bridge.watch(session_id)
        return sub

    def wants(self, session_id: str) -> bool:
        return True  # viewers on other workers cannot be seen from here

    def publish(self, session_id: str, event: dict[str, Any]) -> None:
        super().publish(session_id, event)
        self.bridge.outgoing(session_id, event)

    def publish_remote(self, session_id: str, event: dict[str, Any]) -> None:
        super().publish(session_id, event)

    async def turn_starting(self, session_id: str) -> None:
        await self.bridge.join_turn(session_id)

    def turn_not_started(self, session_id: str) -> None:
        self.bridge.leave_turn(session_id)

    def _remove(self, sub: Subscription) -> None:
        super()._remove(sub)
        if not self.viewers(sub.session_id):
            self.bridge.unwatch(sub.session_id)
