"""The host's identity through real host processes: key files, restart, a damaged key, /info, banner."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx
import pytest

from tests.conftest import MANAGE, HostProcess, host_env
from tests.e2e.trust.conftest import host_address


def test_first_start_creates_key_files_and_restart_keeps_the_address(start_host, project):
    host = start_host("tests.agents:echo_factory")
    keys = project / ".co" / "keys"
    key = keys / "agent.key"
    assert len(key.read_bytes()) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (keys / "recovery.txt").read_text().strip()
    assert (keys / "DO_NOT_SHARE").exists()
    first = host_address(host)
    assert first.startswith("0x") and len(first) == 66
    assert first in host.output()  # the banner shows it
    host.stop()

    again = start_host("tests.agents:echo_factory")
    assert host_address(again) == first
    assert httpx.get(again.url + "/info", timeout=5).json()["address"] == first

    shown = subprocess.run(
        [sys.executable, str(MANAGE), "agentkey"],
        cwd=project,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert first in shown.stdout


def test_a_31_byte_key_aborts_start_naming_the_path_and_keeps_the_file(project):
    key = project / ".co" / "keys" / "agent.key"
    key.parent.mkdir(parents=True)
    damaged = os.urandom(31)
    key.write_bytes(damaged)
    with pytest.raises(RuntimeError) as info:
        HostProcess(project, "tests.agents:echo_factory").start(timeout=30)
    assert str(key) in str(info.value)
    assert key.read_bytes() == damaged
