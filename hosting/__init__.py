"""Host an agent on the network: ``host(create_agent)`` and ``create_app(create_agent)``.

Django is imported inside these functions, so ``from hosting import host`` works anywhere.
"""

from __future__ import annotations

from hosting.core.version import __version__
from hosting.serving.entry import create_app, host

__all__ = ["__version__", "create_app", "host"]
