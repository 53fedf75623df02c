"""What the trust app reads from the host's configuration.

The host passes its ``HostConfig`` (``hosting/core/config.py``, read once at start-up) down; trust sits below
hosting, so it names only the fields it needs instead of importing the host's class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class TrustOptions(Protocol):
    @property
    def trust(self) -> str: ...  # a level, a policy text or a policy file

    @property
    def project_dir(self) -> Path: ...

    @property
    def co_dir(self) -> Path: ...

    @property
    def blacklist(self) -> tuple[str, ...]: ...

    @property
    def whitelist(self) -> tuple[str, ...]: ...

    @property
    def signature_window(self) -> float: ...

    @property
    def strict_requires_whitelist(self) -> bool: ...

    @property
    def redis_url(self) -> str | None: ...
