"""``python manage.py runhost [module:attr]``: host an agent (the built-in demo agent by default)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import ConfigError
from hosting.core.config import export_args

# The limits' options: flag, type, metavar, help (runhost --help shows them under "limits (0 = unlimited)").
LIMIT_OPTIONS = (
    ("--rate-limit-per-minute", float, "N", "turns per identity per minute (default 60)"),
    ("--rate-limit-burst", int, "N", "turns allowed at once (default 20)"),
    ("--max-turns-per-identity", int, "N", "concurrent turns per identity, per worker (default 8)"),
    ("--max-turns-per-ip", int, "N", "concurrent turns per client address, per worker (default 32)"),
    ("--max-ws-per-ip", int, "N", "WebSocket connections per client address, per worker (default 256)"),
    ("--header-timeout", float, "SECONDS", "a request's headers must arrive within this, else 408 (default 30)"),
    (
        "--body-timeout",
        float,
        "SECONDS",
        "a request body may take this, plus 1 s per 500 bytes received, else 408 (default 30)",
    ),
    (
        "--max-connections-per-ip",
        int,
        "N",
        "open connections per client address, HTTP and WebSocket, per worker (default 512)",
    ),
    ("--bodies-in-flight-mb", float, "MB", "request bodies held at once, per worker; past it 503 (default 512)"),
    (
        "--ws-send-buffer-mb",
        float,
        "MB",
        "unsent bytes a WebSocket may hold for a client that does not read, then it is closed with 4413 (default 16)",
    ),
    (
        "--ws-max-frames-per-second",
        float,
        "N",
        "frames a WebSocket client may send a second, PONG included, then it is closed with 4429 (default 200)",
    ),
)


class Command(BaseCommand):
    help = "Host an agent over HTTP, WebSocket and the relay. AGENT is 'module:attribute' (default: the demo)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "agent", nargs="?", help="import path of a factory, agent or function, e.g. myagent:create_agent"
        )
        parser.add_argument("--port", type=int)
        parser.add_argument("--host", dest="bind", help="bind address (default 127.0.0.1; 0.0.0.0 for all)")
        parser.add_argument("--trust", help="open | careful | strict | a policy text | a policy file")
        relay = parser.add_mutually_exclusive_group()
        relay.add_argument("--relay-url")
        relay.add_argument("--no-relay", action="store_true")
        parser.add_argument("--result-ttl", type=int)
        parser.add_argument("--max-file-size", type=int, help="MB per file")
        parser.add_argument("--max-files-per-request", type=int)
        parser.add_argument("--workers", type=int)
        parser.add_argument("--reload", action="store_true", default=None)
        parser.add_argument("--redis-url")
        parser.add_argument(
            "--database-url", help="postgres://... for the trust lists, and results with --store postgres"
        )
        parser.add_argument("--store", choices=("jsonl", "postgres"), help="where session results live (default jsonl)")
        parser.add_argument(
            "--replay-log",
            choices=("sqlite", "redis"),
            help="where replay events live (default sqlite; redis needs --redis-url)",
        )
        parser.add_argument("--pool-size", type=int, help="agent threads per worker")
        parser.add_argument("--blacklist", action="append", metavar="ADDRESS")
        parser.add_argument("--whitelist", action="append", metavar="ADDRESS")
        limits = parser.add_argument_group("limits (0 = unlimited)")
        for flag, kind, metavar, text in LIMIT_OPTIONS:
            limits.add_argument(flag, type=kind, metavar=metavar, help=text)
        limits.add_argument(
            "--trusted-proxy",
            dest="trusted_proxies",
            action="append",
            metavar="ADDRESS",
            help="a reverse proxy (address or network) whose X-Forwarded-For is believed",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        from django.conf import settings

        from hosting.serving.server import run

        if export_args(given_options(opts)):
            # Not started through manage.py (django-admin, python -m django): the settings were read without
            # these options. Start again with them exported, so the settings are built once, from them.
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 (our own argv)
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            run(settings.HOST)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            pass


OPTIONS = (
    "agent",
    "port",
    "bind",
    "trust",
    "result_ttl",
    "max_file_size",
    "max_files_per_request",
    "workers",
    "reload",
    "redis_url",
    "database_url",
    "store",
    "replay_log",
    "pool_size",
    "blacklist",
    "whitelist",
    "rate_limit_per_minute",
    "rate_limit_burst",
    "max_turns_per_identity",
    "max_turns_per_ip",
    "max_ws_per_ip",
    "header_timeout",
    "body_timeout",
    "max_connections_per_ip",
    "bodies_in_flight_mb",
    "ws_send_buffer_mb",
    "ws_max_frames_per_second",
    "trusted_proxies",
)


def given_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line, as ``load_config`` arguments."""
    given = {key: opts[key] for key in OPTIONS if opts.get(key) is not None}
    if opts.get("no_relay"):
        given["relay_url"] = None
    elif opts.get("relay_url"):
        given["relay_url"] = opts["relay_url"]
    return given


def export_options(argv: list[str]) -> None:
    """Put ``runhost``'s options into ``CONNECTONION_HOST_ARGS`` before Django reads the settings (manage.py
    calls this), so the settings and the host config are built once, from the options, in every process."""
    parser = Command().create_parser("manage.py", "runhost")
    try:
        opts = vars(parser.parse_args(argv))
    except CommandError:
        return  # a usage error: Django's own parse of the same arguments reports it
    export_args(given_options(opts))
