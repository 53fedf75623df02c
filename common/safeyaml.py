"""The one YAML reader for files we load (host.yaml, ``.co/sessions``, ``.co/evals``, trust policy front matter).

``yaml.safe_load`` builds no objects from tags, but it still expands aliases: a 1.6 KB "billion laughs" file
becomes a value whose walk (JSON rendering, validation) never ends. None of our files needs an anchor or an
alias, so the loader refuses both before anything is built. A leaf module: it imports nothing of ours.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent


class AliasRefused(yaml.YAMLError):
    """The document uses an anchor (``&a``) or an alias (``*a``)."""


class NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses anchors and aliases (and so merge keys ``<<: *a``) while composing."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise AliasRefused("YAML anchors and aliases are not allowed")
        return super().compose_node(parent, index)


def load(text: str) -> Any:
    """Parse one YAML document safely; raises ``yaml.YAMLError`` (``AliasRefused`` for anchors/aliases)."""
    loader = NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
