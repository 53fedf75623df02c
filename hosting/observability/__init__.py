"""Metrics, traces and structured logs for operators: the core calls in here at a few places only.

``turn.watch_turn`` follows one turn (counters, histograms, its span); ``common.metrics`` holds the
Prometheus families and the other recording calls (in the shared base: trust and
sessions record there too); ``tracing`` is the optional OpenTelemetry side; ``logs`` the JSON formatter; ``views`` serves ``GET /metrics``.
"""
