"""Running the host: one daphne process, N daphne workers on one shared socket, or the autoreloader.

Why daphne on a shared socket for ``workers > 1``: daphne holds an idle WebSocket in ~27 KiB (uvicorn
with websockets ~60 KiB, HARDENING §1), and a listening socket inherited by N processes lets the kernel
hand connections to whichever worker accepts first, with no proxy in between. The parent binds the
port (so a busy port fails before the banner), prepares ``.co/`` once, prints the banner and
supervises the workers, restarting any that die.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from hosting.core.config import ARGS_ENV, WORKER_ENV, HostConfig

log = logging.getLogger("connectonion")
ANNOUNCER_ENV = "CONNECTONION_ANNOUNCER"


def bind_socket(cfg: HostConfig) -> socket.socket:
    """Bind and listen, or stop with a message naming the port and how to change it."""
    family = socket.AF_INET6 if ":" in cfg.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.bind, cfg.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"port {cfg.port} on {cfg.bind} is not available ({exc.strerror}); "
            "choose another with --port, port: in .co/host.yaml, or AGENT_PORT"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def raise_fd_limit() -> tuple[int, int]:
    """Lift the soft open-file limit to the hard one (every socket is a descriptor; soft is often 1024).

    Workers inherit it. Returns the (old, new) soft limit; a refusal is logged, never fatal (FI12).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft, soft
        log.info("raised the open-file limit from %d to %d", soft, target)
        return soft, target
    return soft, soft


def prepare(cfg: HostConfig) -> None:
    """One-time start-up work: Django's tables, interrupted turns, compaction, the agent identity."""
    import fcntl

    from django.core.management import call_command

    from hosting.core.runtime import get_runtime

    cfg.co_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.co_dir / "prepare.lock", "w") as lock:  # several workers may start at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        with _database_lock():  # replicas on other machines may migrate the shared database right now
            call_command("migrate", interactive=False, verbosity=0)
        runtime = get_runtime()
        runtime.store.recover_interrupted()
        runtime.liveness.purge()
        runtime.maintain()


@contextlib.contextmanager
def _database_lock():
    """A PostgreSQL advisory lock around start-up migrations (no-op on the default SQLite)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK])
        try:
            yield
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK])


MIGRATE_LOCK = 0x436F4D67  # any constant of ours: "CoMg"


def project_application() -> Any:
    """The project's ASGI application (its ``ASGI_APPLICATION`` setting): hosting serves the project's
    application without importing the project, which sits above it."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    return import_string(settings.ASGI_APPLICATION)


def serve_forever(cfg: HostConfig, sock: socket.socket, *, announcer: bool = True) -> None:
    """Serve on ``sock`` in this process with daphne (blocks until SIGINT/SIGTERM)."""
    from daphne.server import Server

    from hosting.conversation.seal import sealed_size
    from hosting.core.runtime import get_runtime
    from hosting.serving.limits import ServingLimits, install

    application = project_application()
    runtime = get_runtime()  # load the agent before the first request
    runtime.start_maintenance()
    runtime.start_sweeper()
    hooks: list[object] = []
    drain = threading.current_thread() is threading.main_thread()  # signal handlers need the main thread

    def ready() -> None:
        hooks.append(start_bridge(runtime))
        if announcer:
            hooks.append(start_relay(runtime))
        elif runtime.config.relay_url:
            runtime.relay_state = "on worker 0"  # /health on the other workers: the announcer holds the link

    install(ServingLimits.of(cfg))
    server = Server(
        application,
        endpoints=[f"fd:fileno={sock.fileno()}" + (":domain=INET6" if sock.family == socket.AF_INET6 else "")],
        signal_handlers=not drain,  # ours drain running turns first; --reload serves off the main thread
        # a maximal plain frame may arrive sealed, about 4/3 larger (PROTOCOL §4.8)
        websocket_max_message_size=max(sealed_size(cfg.max_request_bytes), 1024 * 1024),
        websocket_max_frame_size=max(sealed_size(cfg.max_request_bytes), 1024 * 1024),
        ping_interval=max(cfg.ws_ping_interval, 1),
        ping_timeout=max(cfg.ws_pong_timeout, 1),
        websocket_connect_timeout=20,
        application_close_timeout=30,
        ready_callable=ready,
        verbosity=0,
    )
    if drain:
        _drain_on_signal(runtime, cfg.shutdown_grace)
    server.run()
    if drain:
        _abandon_stuck_turns(runtime)


def _drain_on_signal(runtime: Any, grace: float) -> None:
    """SIGTERM/SIGINT: refuse new turns (503), let running ones finish for ``grace`` s, then stop daphne.

    A second SIGINT stops at once. Turns still running afterwards are recorded ``interrupted``
    (``_abandon_stuck_turns``), so a deploy never waits on an agent that does not return (FI10).
    """
    from twisted.internet import reactor

    deadline: list[float] = []

    def check() -> None:
        turns = runtime.turns
        if (not turns.executing and not turns.active) or time.monotonic() >= deadline[0]:
            reactor.callLater(0.2, reactor.stop)  # a moment for the last answers to go out
        else:
            reactor.callLater(0.1, check)

    def begin(signum: int) -> None:
        if deadline:  # a second Ctrl-C stops at once; a repeated SIGTERM (process group + supervisor) does not
            if signum == signal.SIGINT:
                reactor.stop()
            return
        deadline.append(time.monotonic() + grace)
        runtime.turns.closing = True
        running = len(runtime.turns.executing)
        if running:
            log.info("stopping: waiting up to %.0f s for %d running turn(s)", grace, running)
        check()

    def on_signal(signum: int, frame: object) -> None:
        reactor.callFromThread(begin, signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _abandon_stuck_turns(runtime: Any) -> None:
    """After the grace period: mark what still runs ``interrupted`` and exit 0 without joining its threads."""
    if not runtime.turns.executing:
        return
    with runtime.store.write_lock():  # held until exit: an agent thread finishing now cannot write after us
        marked = runtime.turns.interrupt_remaining()
        log.warning(
            "stopped with %d turn(s) still running; recorded %d as interrupted", len(runtime.turns.executing), marked
        )
        runtime.eventlog.flush(timeout=2.0)  # the replay events queued so far (atexit will not run)
        logging.shutdown()
        os._exit(0)


def start_bridge(runtime: Any) -> object | None:
    """Live events across workers through Redis (``redis_url``); never stops the server from starting."""
    if runtime.bridge is None:
        return None
    try:
        runtime.bridge.start(asyncio.get_event_loop())  # daphne calls ready() on its loop
        return runtime.bridge
    except Exception:
        log.exception("bridge: could not start; live events cross workers by polling the event log")
        return None


def start_relay(runtime: object) -> object | None:
    """Start the relay link inside the server's loop (when a relay is configured)."""
    try:
        from hosting.relay.service import start_link
    except ImportError:
        return None
    return start_link(runtime)


def run(cfg: HostConfig) -> None:
    """The ``runhost`` / ``host()`` entry: prepare, banner, then serve (1 process, N workers, or reload)."""
    from hosting.serving.banner import print_banner

    os.environ[ARGS_ENV] = cfg.to_args_json()
    if cfg.reload and os.environ.get("RUN_MAIN") != "true":
        print_banner(cfg)
    if cfg.reload:
        _run_with_reloader(cfg)
        return
    raise_fd_limit()
    sock = bind_socket(cfg)
    prepare(cfg)
    print_banner(cfg)
    if cfg.workers == 1:
        serve_forever(cfg, sock)
    else:
        _supervise(cfg, sock)


def _run_with_reloader(cfg: HostConfig) -> None:
    from django.utils import autoreload

    def watch_config(sender: autoreload.BaseReloader, **kwargs: object) -> None:
        sender.extra_files.add(cfg.host_yaml)
        sender.watch_dir(cfg.project_dir, "*.py")

    autoreload.autoreload_started.connect(watch_config)

    def inner() -> None:
        sock = bind_socket(cfg)
        prepare(cfg)
        serve_forever(cfg, sock)

    autoreload.run_with_reloader(inner)


def _supervise(cfg: HostConfig, sock: socket.socket) -> None:
    """Start ``cfg.workers`` daphne processes on the inherited socket; restart any that die."""
    stopping = False

    repo = str(Path(__file__).resolve().parent.parent)
    search_path = os.pathsep.join([str(Path.cwd()), repo] + [p for p in sys.path if p])
    quick_exits = 0

    # One metrics directory for all workers (prometheus-client's multiprocess mode), emptied per run.
    from common import metrics

    metrics.prepare_directory(cfg.co_dir, os.environ)

    def spawn(index: int) -> subprocess.Popen[bytes]:
        env = dict(
            os.environ, **{WORKER_ENV: str(index), ANNOUNCER_ENV: "1" if index == 0 else "0", "PYTHONPATH": search_path}
        )
        return subprocess.Popen(
            [sys.executable, "-m", "hosting.serving.worker", str(sock.fileno())],
            pass_fds=[sock.fileno()],
            env=env,
            cwd=str(Path.cwd()),
        )

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = {i: spawn(i) for i in range(cfg.workers)}
    started = dict.fromkeys(workers, time.monotonic())
    try:
        while not stopping:
            time.sleep(0.5)
            for i, proc in list(workers.items()):
                if proc.poll() is not None and not stopping:
                    quick_exits = quick_exits + 1 if time.monotonic() - started[i] < 10 else 0
                    if quick_exits >= 5:
                        raise ConfigError("workers keep exiting at start-up; see the errors above")
                    log.warning("worker %d exited with %s; restarting it", i, proc.returncode)
                    metrics.worker_exited(proc.pid)
                    time.sleep(min(quick_exits, 5))
                    workers[i], started[i] = spawn(i), time.monotonic()
    finally:
        for proc in workers.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + cfg.shutdown_grace + 10  # the workers drain their turns first
        for proc in workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
        sock.close()
