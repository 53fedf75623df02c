"""Consumer dispatch without Channels' per-message database hop.

Channels runs ``close_old_connections()`` in asgiref's one shared thread before every handler. Our
consumers never use the ORM on the event loop (database work runs in pool threads), so that hop would
only serialise every socket of the process behind one thread.
"""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name


class DirectDispatchMixin:
    """Put first in a consumer's bases: dispatch straight to the handler, as Channels does otherwise."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
