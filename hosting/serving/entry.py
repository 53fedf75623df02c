"""``host()`` and ``create_app()``: the Python entry points of the spec page (PROTOCOL §9.1).

Only arguments the caller actually passed count as given (a sentinel, not the default value), so
host.yaml applies wherever the code is silent.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from common.errors import ConfigError

_UNSET: Any = object()


def _given(**kwargs: Any) -> dict[str, Any]:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items() if v is not _UNSET}


def _trust_value(trust: Any) -> tuple[Any, Any]:
    """A trust *agent* object cannot travel as JSON: keep it in-process, pass its marker."""
    if trust is _UNSET or isinstance(trust, str):
        return trust, None
    return "custom-agent", trust


def _import_path(target: Any) -> tuple[str | None, Path | None]:
    """``module:attr`` for a target worker processes can import (``__main__`` → the script's module)."""
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not module or not name or "<" in name:
        return None, None
    if module == "__main__":
        script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
        if script is None or script.suffix != ".py":
            return None, None
        return f"{script.stem}:{name}", script.parent
    return f"{module}:{name}", None


def _setup_django(args: dict[str, Any]) -> Any:
    """Export ``args`` for the settings (and every worker) to build the one config from, then set Django up."""
    from django.conf import settings

    from hosting.core.config import export_args, load_config, use_settings_module

    if settings.configured:
        raise ConfigError("host() and create_app() configure Django: call them before anything reads its settings")
    use_settings_module("connectonion_site.settings")
    load_config(args)  # a bad argument is a ConfigError here, not an exit from the settings module
    export_args({k: v for k, v in args.items() if k != "trust_agent"})
    import django

    django.setup()
    return settings.HOST


def host(
    create_agent: Any,
    trust: Any = _UNSET,
    blacklist: list[str] | None = _UNSET,
    whitelist: list[str] | None = _UNSET,
    port: int = _UNSET,
    workers: int = _UNSET,
    result_ttl: int = _UNSET,
    relay_url: str | None = _UNSET,
    reload: bool = _UNSET,
    max_file_size: int = _UNSET,
    max_files_per_request: int = _UNSET,
) -> None:
    """Serve ``create_agent`` (a factory, an agent instance, or a function) until interrupted.

    Defaults as the spec page: trust "careful", port 8000, 1 worker, results kept 24 h, the public
    relay, no reload, 10 MB per file and 10 files per request.
    """
    from hosting.core.config import WORKER_ENV

    if os.environ.get(WORKER_ENV) is not None:
        return  # a worker process importing the user's script for its factory: the server already runs
    trust_value, trust_agent = _trust_value(trust)
    args = _given(
        trust=trust_value,
        blacklist=blacklist,
        whitelist=whitelist,
        port=port,
        workers=workers,
        result_ttl=result_ttl,
        relay_url=relay_url,
        reload=reload,
        max_file_size=max_file_size,
        max_files_per_request=max_files_per_request,
    )
    path, search_dir = _import_path(create_agent)
    if path is not None:
        args["agent"] = path
    if search_dir is not None and str(search_dir) not in sys.path:
        sys.path.insert(0, str(search_dir))
    config = _setup_django(args)
    if (config.workers > 1 or config.reload) and path is None:
        raise ConfigError("workers > 1 and reload=True need a module-level factory that worker processes can import")
    from hosting.core import runtime
    from hosting.serving.server import run

    if config.workers == 1 and not config.reload:
        runtime.set_agent(create_agent)
    runtime.set_trust_agent(trust_agent)
    with contextlib.suppress(KeyboardInterrupt):
        run(config)


def create_app(
    create_agent: Any,
    trust: Any = _UNSET,
    blacklist: list[str] | None = _UNSET,
    whitelist: list[str] | None = _UNSET,
    result_ttl: int = _UNSET,
) -> Any:
    """The ASGI application for uvicorn / gunicorn / daphne: the same routes, no banner, no relay.

    No Redis bridge either: with several worker processes, a viewer on another worker follows a turn by
    polling the event log, and answers must arrive on the worker running the turn.
    """
    runtime_module = sys.modules.get("hosting.core.runtime")
    if runtime_module is not None and runtime_module.loading_agent_module():
        # ``runhost myagent:create_agent`` (or daphne, or a worker) is importing this module for its factory: the
        # host is configured from its own command line and host.yaml, so only hand back the application.
        from hosting.serving.server import project_application

        return project_application()
    trust_value, trust_agent = _trust_value(trust)
    args = _given(trust=trust_value, blacklist=blacklist, whitelist=whitelist, result_ttl=result_ttl)
    path, _ = _import_path(create_agent)
    if path is not None:
        args["agent"] = path
    _setup_django(args)
    from hosting.core import runtime
    from hosting.serving.server import prepare, project_application

    runtime.set_agent(create_agent)
    runtime.set_trust_agent(trust_agent)
    from django.conf import settings

    _off_the_event_loop(prepare, settings.HOST)
    runtime.get_runtime().start_maintenance()  # hourly expiry, as under runhost (one thread per worker process)
    return project_application()


def _off_the_event_loop(fn: Any, *args: Any) -> Any:
    """Call ``fn`` here, or on a thread when this thread runs an event loop.

    ``uvicorn --workers N`` and ``--reload`` import the application inside each worker's running loop, where
    Django refuses the database work of ``prepare`` (SynchronousOnlyOperation). Blocking is fine: nothing is
    served before the import returns.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)

    def call() -> Any:
        from django.db import connections

        try:
            return fn(*args)
        finally:
            connections.close_all()  # the thread's connections, not left to the garbage collector

    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:
        return pool.submit(call).result()
