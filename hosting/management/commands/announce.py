"""``manage.py announce``: run only the relay link of this project's agent (no local HTTP server).

Relayed conversations go to ``hosting.conversation.protocol.Conversation`` when the host runtime loads; with
``--echo`` (or while the protocol module is unavailable) they go to the built-in echo conversation.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from common.errors import ConfigError
from hosting.core.config import HostConfig, load_config
from hosting.relay import echo as relay_echo
from hosting.relay import link as relay_link

logger = logging.getLogger("connectonion.relay")


class Command(BaseCommand):
    help = "Announce this agent on its relay and serve relayed conversations until interrupted."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--relay-url", help="relay base or announce URL (default: host.yaml / the public relay)")
        parser.add_argument("--echo", action="store_true", help="answer with the built-in echo conversation")
        parser.add_argument(
            "--no-endpoints", action="store_true", help="announce no direct endpoints (no local server runs)"
        )
        parser.add_argument("--heartbeat", type=float, default=60.0, help="seconds between ANNOUNCEs (60)")
        parser.add_argument("--idle-timeout", type=float, default=300.0, help="end a silent conversation after (300)")
        parser.add_argument("--max-conversations", type=int, default=256, help="concurrent relayed conversations (256)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            cfg: HostConfig = getattr(settings, "HOST", None) or load_config()
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        if options["relay_url"]:
            cfg = replace(cfg, relay_url=options["relay_url"])
        if not cfg.relay_url:
            raise CommandError("no relay configured (relay_url is empty); pass --relay-url")
        if options["heartbeat"] <= 0 or options["idle_timeout"] <= 0 or options["max_conversations"] < 1:
            raise CommandError("--heartbeat, --idle-timeout and --max-conversations must be positive")
        wiring = _wiring(cfg, echo=options["echo"])  # loads the agent (sync, like runhost) before the loop
        asyncio.run(self._serve(cfg, wiring, options))
        self.stdout.write("relay link stopped")

    async def _serve(self, cfg: HostConfig, wiring: dict[str, Any], options: dict[str, Any]) -> None:
        link = relay_link.RelayLink.from_config(
            cfg,
            wiring["identity"],
            conversation_factory=wiring["factory"],
            legacy_input=wiring["legacy"],
            summary=wiring["summary"],
            profile=wiring["profile"],
            heartbeat_interval=options["heartbeat"],
            idle_timeout=options["idle_timeout"],
            max_conversations=options["max_conversations"],
        )
        if options["no_endpoints"]:
            link.endpoints = []
        self.stdout.write(f"{wiring['identity'].address} → {link.relay_base} ({wiring['what']})")
        self.stdout.flush()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await link.start()
        try:
            await stopping.wait()
        finally:
            await link.stop()  # closes the relay socket cleanly (1001) and ends every conversation


def _wiring(cfg: HostConfig, *, echo: bool) -> dict[str, Any]:
    """The conversation factory, legacy input, identity, summary and profile for this project."""
    if not echo:
        try:
            return _host_wiring()
        except ImportError as exc:
            logger.warning("relay: the host protocol is not available (%s); using the echo conversation", exc)
    from trust.identity import load_identity

    return {
        "factory": relay_echo.EchoConversation,
        "legacy": relay_echo.echo_legacy_input,
        "identity": load_identity(cfg.co_dir),
        "summary": "echo agent",
        "profile": None,
        "what": "echo conversation",
    }


def _host_wiring() -> dict[str, Any]:
    from hosting.core.runtime import get_runtime
    from hosting.relay.service import wiring

    return wiring(get_runtime())
