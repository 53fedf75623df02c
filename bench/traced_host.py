"""``manage.py runhost ...`` with tracemalloc on, for leak hunting in bench/soak.py (``--tracemalloc``).

    python bench/traced_host.py runhost <agent> --port P ...

``SIGUSR1`` collects garbage, then writes a snapshot to ``$SOAK_TRACE_DIR/snapshot-<n>.trace`` (n counts from 1; written to a temp
name, then renamed, so a reader never sees half a file). ``SOAK_TRACE_FRAMES`` frames per allocation (1).
"""

from __future__ import annotations

import gc
import os
import runpy
import signal
import sys
import threading
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

tracemalloc.start(int(os.environ.get("SOAK_TRACE_FRAMES", "1")))
_count = 0


def _dump(signum: int, frame: object) -> None:
    global _count
    _count += 1
    target = Path(os.environ.get("SOAK_TRACE_DIR", ".")) / f"snapshot-{_count}.trace"

    def write() -> None:
        gc.collect()  # cyclic garbage is not a leak: count only what is still reachable
        snapshot = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
        snapshot.dump(str(target) + ".tmp")
        os.replace(str(target) + ".tmp", target)

    threading.Thread(target=write, name="trace-dump", daemon=True).start()  # off the reactor's thread


signal.signal(signal.SIGUSR1, _dump)
sys.argv = [str(REPO / "manage.py"), *sys.argv[1:]]
runpy.run_path(str(REPO / "manage.py"), run_name="__main__")
