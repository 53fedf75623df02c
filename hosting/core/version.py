"""The host's version (also served in /info, the OpenAPI and AsyncAPI documents)."""

__version__ = "0.1.0"
