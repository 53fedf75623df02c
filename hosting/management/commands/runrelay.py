"""``manage.py runrelay``: serve our own relay (PROTOCOL §8.2) with daphne.

The relay runs in a daphne child process under ``connectonion_site.relay_settings``, so it needs nothing of
the agent host's settings. The child finds this repository from any folder (its root leads ``PYTHONPATH``); the
``Relay on`` line is printed once the relay answers ``/health``, and signals are passed on to it.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from hosting.conversation.seal import sealed_size
from hosting.core.config import MB, HostConfig
from hosting.relay import wire
from hosting.relay.link import TAG_BYTES

REPO_ROOT = Path(__file__).resolve().parents[3]  # the folder holding connectonion_site/ and hosting/
READY_TIMEOUT = 60.0  # seconds the relay may take to answer /health before the start is called failed


def default_message_cap() -> int:
    """The agents' default upload budget in bytes (PROTOCOL D24), sealed (about 4/3 larger, §4.8) and
    tagged, so a relayed upload fits whether or not its socket is sealed."""
    mb = HostConfig.max_files_per_request * HostConfig.max_file_size * 4 / 3 * 2 + 1
    return sealed_size(math.ceil(mb * MB)) + TAG_BYTES


class Command(BaseCommand):
    help = "Run a ConnectOnion relay: WS /ws/announce, WS /ws/input, WS /ws/lookup, GET /api/agents/<address>."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
        parser.add_argument(
            "--agent-ttl", type=float, help="seconds an agent stays listed after its last ANNOUNCE (120)"
        )
        parser.add_argument("--ping-interval", type=float, help="seconds between PINGs to client sockets (30)")
        parser.add_argument("--signature-window", type=float, help="accepted ANNOUNCE clock skew in seconds (300)")
        parser.add_argument("--announce-min-interval", type=float, help="refuse ANNOUNCEs closer than this (0 = off)")
        parser.add_argument("--redis-url", help="share agents and traffic between relay processes through Redis")
        parser.add_argument(
            "--public-url",
            help="the URL agents reach this relay at, e.g. wss://relay.example.com (D28: an ANNOUNCE signed "
            "for another relay is refused; default: $RELAY_PUBLIC_URL, else the URL each agent dialled)",
        )
        parser.add_argument(
            "--header-timeout", type=float, help="seconds a request's headers may take, else 408 (30; 0 = none)"
        )
        parser.add_argument(
            "--max-connections-per-ip",
            type=int,
            help="open connections per client address, HTTP and WebSocket (512; 0 = unlimited)",
        )
        parser.add_argument(
            "--max-frames-per-second",
            type=float,
            help="frames a client socket may send a second, then ERROR and close 4429 (200; 0 = unlimited)",
        )
        parser.add_argument(
            "--send-buffer-mb",
            type=float,
            help="MB the relay may owe a socket that does not read, then close 4413 (16; 0 = unlimited)",
        )
        parser.add_argument(
            "--max-message-bytes",
            type=int,
            default=default_message_cap(),
            help="largest WebSocket message accepted (default: the agents' upload budget)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        public_url = _checked(options)
        # Its own process group: a Ctrl-C reaches it once, passed on by this process, not twice.
        child = subprocess.Popen(_daphne_argv(options), env=_relay_environment(options, public_url), process_group=0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
        if not self._wait_until_ready(child, options["host"], options["port"]):
            child.terminate()
            code = child.wait()
            raise CommandError(f"the relay did not start (daphne exited with {code}; its output is above)")
        self._say_started(options, public_url)
        sys.exit(child.wait())

    def _say_started(self, options: dict[str, Any], public_url: str | None) -> None:
        self.stdout.write(
            f"Relay on ws://{options['host']}:{options['port']} "
            "(agents: /ws/announce, clients: /ws/input, lookup: /api/agents/<address>)"
        )
        if public_url is None:
            self.stdout.write(
                "Public URL not set: an ANNOUNCE must name the URL this relay was reached at (a Host header that "
                "names its socket, else its address); set --public-url behind a proxy or a port mapping"
            )
        else:
            self.stdout.write(f"Public URL {public_url}: ANNOUNCEs signed for any other relay are refused")
        self.stdout.flush()

    @staticmethod
    def _wait_until_ready(child: subprocess.Popen[bytes], host: str, port: int) -> bool:
        """Poll the child's ``/health`` until it answers 200; False if the child exits or time runs out."""
        address = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        url = f"http://{address}:{port}/health"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and child.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            except OSError:
                time.sleep(0.1)
        return False


def _checked(options: dict[str, Any]) -> str | None:
    """Refuse bad options before anything starts; returns the public URL (option, else ``RELAY_PUBLIC_URL``)."""
    if not 0 < options["port"] < 65536:
        raise CommandError(f"--port must be between 1 and 65535 (got {options['port']})")
    if options["max_message_bytes"] < 64 * 1024:
        raise CommandError("--max-message-bytes must be at least 65536")
    public_url = options["public_url"] or os.environ.get("RELAY_PUBLIC_URL") or None
    if public_url is not None and wire.relay_identity(public_url) is None:
        raise CommandError(f"--public-url must be a ws:// or wss:// URL (got {public_url!r})")
    return public_url


def _relay_environment(options: dict[str, Any], public_url: str | None) -> dict[str, str]:
    """The daphne child's environment: the relay's settings module and every option given, as RELAY_* variables."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="connectonion_site.relay_settings")
    if public_url is not None:
        env["RELAY_PUBLIC_URL"] = public_url
    for option, variable in (
        ("agent_ttl", "RELAY_AGENT_TTL"),
        ("ping_interval", "RELAY_PING_INTERVAL"),
        ("signature_window", "RELAY_SIGNATURE_WINDOW"),
        ("announce_min_interval", "RELAY_ANNOUNCE_MIN_INTERVAL"),
        ("redis_url", "RELAY_REDIS_URL"),
        ("header_timeout", "RELAY_HEADER_TIMEOUT"),
        ("max_connections_per_ip", "RELAY_MAX_CONNECTIONS_PER_IP"),
        ("max_frames_per_second", "RELAY_MAX_FRAMES_PER_SECOND"),
        ("send_buffer_mb", "RELAY_SEND_BUFFER_MB"),
    ):
        if options[option] is not None:
            env[variable] = str(options[option])
    env["RELAY_MAX_MESSAGE_BYTES"] = str(options["max_message_bytes"])  # past it the consumers answer ERROR
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _daphne_argv(options: dict[str, Any]) -> list[str]:
    """The daphne command line. daphne's own cap sits above the relay's, as the host's does (about 4/3), so a
    frame over the relay's cap gets the ERROR "message too large (max N bytes)" of /ws; only one past daphne's
    is dropped by the transport."""
    cap = str(sealed_size(options["max_message_bytes"]))
    return [
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
