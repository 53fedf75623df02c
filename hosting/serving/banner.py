"""The start-up banner of the spec page (PROTOCOL §9.4)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from hosting.core.config import DEFAULT_RELAY_URL, HostConfig

RULE = "─" * 37
CHAT_URL = "https://chat.openonion.ai/"
TRUST_MEANING = {
    "open": "anyone may call, signed or not",
    "careful": "anonymous callers accepted; a signed caller is identified",
    "strict": "signed requests only",
}


def trust_line(cfg: HostConfig) -> str:
    """What the trust level lets in, said plainly (a ``careful`` host accepts anonymous callers)."""
    if cfg.trust_level == "custom":
        policy = " ".join(cfg.trust.split())
        return f"trust: custom policy ({policy[:50]}{'…' if len(policy) > 50 else ''})"
    return f"trust: {cfg.trust} ({TRUST_MEANING[cfg.trust_level]})"


def project_line(cfg: HostConfig, cwd: Path | None = None) -> str:
    """The folder whose ``.co/`` this host uses; found by walking up when the start folder has none."""
    cwd = (cwd or Path.cwd()).resolve()
    line = f"project: {cfg.co_dir}"
    if cfg.project_dir.resolve() != cwd:
        line += f" (found above {cwd})"
    return line


def banner_text(
    cfg: HostConfig, *, name: str, model: str, tools: int, address: str, shared: bool, relay_line: str
) -> str:
    lines = [
        f"INFO: Loaded environment: {path}"
        if path.endswith(".env") and "keys.env" not in path
        else f"INFO: Loaded global keys: {path}"
        for path in cfg.loaded_env_files
    ]
    if lines:
        lines.append("")
    url_host = "localhost" if cfg.bind in ("127.0.0.1", "localhost", "0.0.0.0") else cfg.bind
    lines += [
        f"[agent] {RULE}",
        f"        {name}",
        f"        {model} • {tools} tool{'' if tools == 1 else 's'}",
    ]
    if shared:
        lines.append("        shared instance: turns run one at a time (pass a factory to isolate them)")
    lines += [
        "",
        f"[host]  {RULE}",
        f"        http://{url_host}:{cfg.port}",
        "        POST /input · WS /ws · GET /docs",
        f"        {trust_line(cfg)}",
        "",
        f"        {address}",
    ]
    if cfg.relay_url and cfg.relay_url.rstrip("/") in (DEFAULT_RELAY_URL, DEFAULT_RELAY_URL[: -len("/ws/announce")]):
        lines.append(f"        ↳ {CHAT_URL}{address}")  # the chat page of this agent, reached through the relay
    lines.append(f"        {relay_line}")
    results = "PostgreSQL (shared)" if cfg.store == "postgres" else "JSONL in .co/"
    replay = "Redis Streams (shared)" if cfg.replay_log == "redis" else "SQLite in .co/"
    lines.append(f"        results: {results} · replay log: {replay}")
    if cfg.workers > 1:
        scale = (
            "Redis channel layer" if cfg.redis_url else "no Redis: live events cross workers by polling the event log"
        )
        lines.append(f"        {cfg.workers} workers · {scale}")
    lines += [
        "",
        f"        {project_line(cfg)}",
        f"        config: {cfg.host_yaml}" + ("" if cfg.host_yaml.exists() else " (not present; defaults apply)"),
        f"        logs: {cfg.logs_dir}",
        "",
    ]
    lines += [f"WARNING: {w}" for w in cfg.warnings]
    if cfg.api_key and not cfg.admin_token:
        lines.append(
            "WARNING: OPENONION_API_KEY opens /admin/*; a separate CONNECTONION_ADMIN_TOKEN is safer "
            "(the API key is also a billing key)"
        )
    lines.append("Waiting for tasks... (Ctrl-C to stop)")
    return "\n".join(lines)


def print_banner(cfg: HostConfig, out: TextIO | None = None) -> None:
    from hosting.core.runtime import get_runtime

    runtime = get_runtime()
    info = runtime.info
    # The link connects after the banner: the "✓ relay" line (or the reason) follows in the log.
    relay_line = f"↻ relay (connecting to {cfg.relay_url})" if cfg.relay_url else "no relay"
    text = banner_text(
        cfg,
        name=cfg.name or info.name,
        model=info.model,
        tools=len(info.tools),
        address=runtime.address,
        shared=info.shared,
        relay_line=relay_line,
    )
    stream = out or sys.stdout
    stream.write(text + "\n")
    stream.flush()
