"""``manage.py runrelay``: serve our own relay (PROTOCOL §8.2) with daphne.

The relay runs in a fresh daphne process (this one is replaced by it) under
``connectonion_site.relay_settings``, so it needs nothing of the agent host's settings.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from hosting.config import MB, HostConfig


def default_message_cap() -> int:
    """The agents' default upload budget in bytes (PROTOCOL D24), so a relayed upload fits."""
    mb = HostConfig.max_files_per_request * HostConfig.max_file_size * 4 / 3 * 2 + 1
    return math.ceil(mb * MB)


class Command(BaseCommand):
    help = (
        "Run a ConnectOnion relay: WS /ws/announce, WS /ws/input, WS /ws/lookup, GET /api/agents/<address>."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
        parser.add_argument(
            "--agent-ttl", type=float, help="seconds an agent stays listed after its last ANNOUNCE (120)"
        )
        parser.add_argument(
            "--ping-interval", type=float, help="seconds between PINGs to client sockets (30)"
        )
        parser.add_argument(
            "--signature-window", type=float, help="accepted ANNOUNCE clock skew in seconds (300)"
        )
        parser.add_argument(
            "--announce-min-interval", type=float, help="refuse ANNOUNCEs closer than this (0 = off)"
        )
        parser.add_argument(
            "--redis-url", help="share agents and traffic between relay processes through Redis"
        )
        parser.add_argument(
            "--max-message-bytes",
            type=int,
            default=default_message_cap(),
            help="largest WebSocket message accepted (default: the agents' upload budget)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["port"] < 65536:
            raise CommandError(f"--port must be between 1 and 65535 (got {options['port']})")
        if options["max_message_bytes"] < 64 * 1024:
            raise CommandError("--max-message-bytes must be at least 65536")
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="connectonion_site.relay_settings")
        for option, variable in (
            ("agent_ttl", "RELAY_AGENT_TTL"),
            ("ping_interval", "RELAY_PING_INTERVAL"),
            ("signature_window", "RELAY_SIGNATURE_WINDOW"),
            ("announce_min_interval", "RELAY_ANNOUNCE_MIN_INTERVAL"),
            ("redis_url", "RELAY_REDIS_URL"),
        ):
            if options[option] is not None:
                env[variable] = str(options[option])
        cap = str(options["max_message_bytes"])
        argv = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            options["host"],
            "-p",
            str(options["port"]),
            # daphne's default 1 MiB would drop larger frames without a close (PROTOCOL D24).
            "--websocket-max-message-size",
            cap,
            "--websocket-max-frame-size",
            cap,
            "connectonion_site.relay_asgi:application",
        ]
        self.stdout.write(
            f"Relay on ws://{options['host']}:{options['port']} "
            "(agents: /ws/announce, clients: /ws/input, lookup: /api/agents/<address>)"
        )
        self.stdout.flush()
        sys.stderr.flush()
        os.execvpe(sys.executable, argv, env)  # noqa: S606 - replace this process with the relay server
