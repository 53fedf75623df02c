"""``python manage.py runhost [module:attr]``: host an agent (the built-in demo agent by default)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hosting.errors import ConfigError


class Command(BaseCommand):
    help = "Host an agent over HTTP, WebSocket and the relay. AGENT is 'module:attribute' (default: the demo)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("agent", nargs="?", help="import path of a factory, agent or function, e.g. myagent:create_agent")
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
        parser.add_argument("--pool-size", type=int, help="agent threads per worker")
        parser.add_argument("--blacklist", action="append", metavar="ADDRESS")
        parser.add_argument("--whitelist", action="append", metavar="ADDRESS")
        limits = parser.add_argument_group("limits (0 = unlimited)")
        limits.add_argument("--rate-limit-per-minute", type=float, metavar="N",
                            help="turns per identity per minute (default 60)")
        limits.add_argument("--rate-limit-burst", type=int, metavar="N", help="turns allowed at once (default 20)")
        limits.add_argument("--max-turns-per-identity", type=int, metavar="N",
                            help="concurrent turns per identity, per worker (default 8)")
        limits.add_argument("--max-turns-per-ip", type=int, metavar="N",
                            help="concurrent turns per client address, per worker (default 32)")
        limits.add_argument("--max-ws-per-ip", type=int, metavar="N",
                            help="WebSocket connections per client address, per worker (default 256)")
        limits.add_argument("--trusted-proxy", dest="trusted_proxies", action="append", metavar="ADDRESS",
                            help="a reverse proxy (address or network) whose X-Forwarded-For is believed")

    def handle(self, *args: Any, **opts: Any) -> None:
        from hosting.config import load_config
        from hosting.server import run

        given = {
            key: opts[key]
            for key in ("agent", "port", "bind", "trust", "result_ttl", "max_file_size", "max_files_per_request",
                        "workers", "reload", "redis_url", "pool_size", "blacklist", "whitelist",
                        "rate_limit_per_minute", "rate_limit_burst", "max_turns_per_identity", "max_turns_per_ip",
                        "max_ws_per_ip", "trusted_proxies")
            if opts.get(key) is not None
        }
        if opts["no_relay"]:
            given["relay_url"] = None
        elif opts["relay_url"]:
            given["relay_url"] = opts["relay_url"]
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            config = load_config(given)
            reconfigure(config)
            run(config)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            pass


def reconfigure(config: Any) -> None:
    """Settings were built from the environment before our arguments were known: refresh them."""
    from django.conf import settings

    from connectonion_site.settings import host_settings
    from hosting.runtime import reset_runtime

    for key, value in host_settings(config).items():
        setattr(settings, key, value)
    reset_runtime()
