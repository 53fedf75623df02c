"""The HTTP door: DRF views, admin API, authentication, parsers, renderers, middleware, OpenAPI."""
