"""The shared base every app may import: the error classes (``errors``), the Prometheus metrics
(``metrics``) and the YAML loader (``safeyaml``). It imports nothing of ours (lint-imports checks it)."""
