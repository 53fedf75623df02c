"""Serving: entry points (host, create_app), processes and workers, daphne and ASGI limits, banner."""
