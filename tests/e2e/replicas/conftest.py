"""Replicas (issue 18): "machines" are project folders on this host, each with its own ``.co/``, sharing one
key, one PostgreSQL database made for the test module and (where a test needs it) one Redis of their own.

Nothing here touches the shared Redis on 6379 or the ``test`` database: the database is created fresh and
dropped afterwards; Redis is a throwaway ``redis-server`` on a free port that a test may restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import NO_TURN_LIMITS, REPO, HostProcess, free_port
from tests.support.hosts import Loopback, OwnRedis, ServerProcess, stop_all

PG = "postgres://postgres@127.0.0.1:5432"


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG + "/test", autocommit=True, connect_timeout=3) as db:
        db.execute(sql)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this module (skips, saying why, when PostgreSQL is not there)."""
    name = f"replicas_{uuid.uuid4().hex[:10]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # psycopg missing or no server
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is needed for the replica tests ({exc.__class__.__name__})")
    yield f"{PG}/{name}"
    with contextlib.suppress(Exception):
        _admin(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


class Machines:
    """N hosts in N folders: same key (copied from the first), same database, each its own ``.co/``."""

    def __init__(self, base: Path, pg_url: str, redis_url: str | None) -> None:
        self.base = base
        self.pg_url = pg_url
        self.redis_url = redis_url
        self.hosts: list[HostProcess] = []

    def start(self, n: int, agent: str | None = None, *args: str, yaml: str = "") -> list[HostProcess]:
        """``agent`` None: the demo agent (it counts slowly, asks approval for notes, calculates)."""
        hosts = []
        for i in range(n):
            folder = self.base / f"machine-{len(self.hosts) + len(hosts)}"
            (folder / ".co").mkdir(parents=True)
            shared = "store: postgres\nlease_seconds: 3\n" + ("replay_log: redis\n" if self.redis_url else "")
            (folder / ".co" / "host.yaml").write_text(shared + yaml)
            if self.hosts or hosts:
                keys = (self.hosts + hosts)[0].project / ".co" / "keys"
                shutil.copytree(keys, folder / ".co" / "keys")
            env = {"DATABASE_URL": self.pg_url}
            if self.redis_url:
                env["REDIS_URL"] = self.redis_url
            host = HostProcess(folder, *([agent] if agent else []), *NO_TURN_LIMITS, *args, env=env).start()
            hosts.append(host)
        self.hosts += hosts
        return hosts

    def stop(self) -> None:
        stop_all(self.hosts)


@pytest.fixture
def machines(tmp_path: Path, pg_url: str) -> Iterator[Machines]:
    """Machines sharing PostgreSQL only (results); replay logs stay in each folder."""
    group = Machines(tmp_path, pg_url, None)
    yield group
    group.stop()


@pytest.fixture
def shared_machines(tmp_path: Path, pg_url: str, redis: OwnRedis) -> Iterator[Machines]:
    """Machines sharing PostgreSQL (results, leases) and one Redis (replay log, channel layer, ledger)."""
    group = Machines(tmp_path, pg_url, redis.url)
    yield group
    group.stop()


class Haproxy(Loopback, ServerProcess):
    """haproxy in round robin over the given backends, no stickiness: deploy/haproxy.cfg's settings."""

    stop_timeout = 10

    def __init__(self, folder: Path, backends: list[str]) -> None:
        self.port = free_port()
        self.folder = folder
        template = (REPO / "deploy" / "haproxy.cfg").read_text()
        servers = "\n".join(f"    server replica{i} {b} check inter 1s fall 2 rise 1" for i, b in enumerate(backends))
        text = template.split("# -- replicas --")[0].replace("bind :8000", f"bind 127.0.0.1:{self.port}")
        self.cfg = folder / "haproxy.cfg"
        self.cfg.write_text(text + servers + "\n")

    def start(self) -> Haproxy:
        binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        if binary is None:
            pytest.skip("haproxy is not installed (.ci/run installs Debian's; the replica tests need a balancer)")
        self.launch(
            [binary, "-db", "-f", str(self.cfg)],
            cwd=self.folder,
            env=dict(os.environ),
            log_path=self.folder / "haproxy.log",
            ready_url=self.url + "/health",
            timeout=15,
            what="haproxy",
        )
        return self
