"""The start-up banner says what a newcomer needs: who may call, which ``.co/`` is used, how to stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hosting.core.config import DEFAULT_RELAY_URL, HostConfig
from hosting.serving.banner import banner_text
from tests.conftest import MANAGE, HostProcess, host_env

ADDRESS = "0x" + "ab" * 32


def banner(cfg: HostConfig, tools: int = 1) -> str:
    return banner_text(
        cfg, name="translator", model="m", tools=tools, address=ADDRESS, shared=False, relay_line="no relay"
    )


def test_banner_says_a_careful_host_accepts_anonymous_callers(tmp_path):
    text = banner(HostConfig(project_dir=tmp_path, trust="careful"))
    assert "trust: careful (anonymous callers accepted" in text
    assert "trust: strict (signed requests only)" in banner(HostConfig(project_dir=tmp_path, trust="strict"))
    assert "trust: open (anyone may call" in banner(HostConfig(project_dir=tmp_path, trust="open"))


def test_banner_pluralises_tools_and_ends_with_how_to_stop(tmp_path):
    cfg = HostConfig(project_dir=tmp_path)
    assert "m • 1 tool\n" in banner(cfg, tools=1)
    assert "m • 2 tools\n" in banner(cfg, tools=2)
    assert banner(cfg).splitlines()[-1] == "Waiting for tasks... (Ctrl-C to stop)"


def test_banner_links_this_agents_chat_page_on_the_public_relay(tmp_path):
    text = banner(HostConfig(project_dir=tmp_path, relay_url=DEFAULT_RELAY_URL))
    assert f"↳ https://chat.openonion.ai/{ADDRESS}" in text
    assert "chat.openonion.ai" not in banner(HostConfig(project_dir=tmp_path, relay_url=None))


def test_host_started_below_a_project_shows_the_dot_co_found_above(tmp_path):
    project = tmp_path / "proj"
    (project / ".co").mkdir(parents=True)
    sub = project / "sub"
    sub.mkdir()
    host = HostProcess(sub).start()
    try:
        out = host.output()
    finally:
        host.stop()
    assert f"project: {project.resolve() / '.co'} (found above {sub.resolve()})" in out, out
    assert not (sub / ".co").exists()


def test_agentkey_in_an_empty_folder_leaves_no_dot_co_behind(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(MANAGE), "agentkey"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=host_env(HOME=str(tmp_path), AGENT_CONFIG_PATH=str(tmp_path / "machine")),
        timeout=60,
    )
    assert done.returncode != 0 and "agentkey --create" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
