"""Host an agent on the network: ``host(create_agent)`` and ``create_app(create_agent)``.

Django is imported inside these functions, so ``from hosting import host`` works anywhere.
"""

from __future__ import annotations

__version__ = "0.1.0"

from hosting.entry import create_app, host  # noqa: E402

__all__ = ["__version__", "create_app", "host"]
