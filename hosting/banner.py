"""The start-up banner of the spec page (PROTOCOL §9.4)."""

from __future__ import annotations

import sys
from typing import TextIO

from hosting.config import DEFAULT_RELAY_URL, HostConfig

RULE = "─" * 37


def banner_text(cfg: HostConfig, *, name: str, model: str, tools: int, address: str, shared: bool,
                relay_line: str) -> str:
    lines = [f"INFO: Loaded environment: {path}" if path.endswith(".env") and "keys.env" not in path
             else f"INFO: Loaded global keys: {path}" for path in cfg.loaded_env_files]
    if lines:
        lines.append("")
    url_host = "localhost" if cfg.bind in ("127.0.0.1", "localhost", "0.0.0.0") else cfg.bind  # noqa: S104
    lines += [
        f"[agent] {RULE}",
        f"        {name}",
        f"        {model} • {tools} tools",
    ]
    if shared:
        lines.append("        shared instance: turns run one at a time (pass a factory to isolate them)")
    lines += [
        "",
        f"[host]  {RULE}",
        f"        http://{url_host}:{cfg.port}",
        "        POST /input · WS /ws · GET /docs",
        "",
        f"        {address}",
    ]
    if cfg.relay_url and cfg.relay_url.rstrip("/") in (DEFAULT_RELAY_URL, DEFAULT_RELAY_URL[: -len("/ws/announce")]):
        lines.append("        ↳ chat.openonion.ai ↗")
    lines.append(f"        {relay_line}")
    if cfg.workers > 1:
        scale = "Redis channel layer" if cfg.redis_url else "no Redis: live events cross workers by polling the event log"
        lines.append(f"        {cfg.workers} workers · {scale}")
    lines += [
        "",
        f"        config: {cfg.host_yaml}" + ("" if cfg.host_yaml.exists() else " (not present; defaults apply)"),
        f"        logs: {cfg.logs_dir}",
        "",
    ]
    lines += [f"WARNING: {w}" for w in cfg.warnings]
    if cfg.api_key and not cfg.admin_token:
        lines.append("WARNING: OPENONION_API_KEY opens /admin/*; a separate CONNECTONION_ADMIN_TOKEN is safer "
                     "(the API key is also a billing key)")
    lines.append("Waiting for tasks...")
    return "\n".join(lines)


def print_banner(cfg: HostConfig, out: TextIO | None = None) -> None:
    from hosting.runtime import get_runtime

    runtime = get_runtime()
    info = runtime.info
    # The link connects after the banner: the "✓ relay" line (or the reason) follows in the log.
    relay_line = f"↻ relay (connecting to {cfg.relay_url})" if cfg.relay_url else "no relay"
    text = banner_text(cfg, name=cfg.name or info.name, model=info.model, tools=len(info.tools),
                       address=runtime.address, shared=info.shared, relay_line=relay_line)
    stream = out or sys.stdout
    stream.write(text + "\n")
    stream.flush()
