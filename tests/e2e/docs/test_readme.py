"""Every code block of README.md runs here, so the README cannot drift from what the host does.

Each fenced block has a marker on the line above it saying how it runs:

    <!-- readme-test: file NAME -->          write the block to NAME in the reader's project folder
    <!-- readme-test: append NAME -->        append it to NAME (a later addition to the same file)
    <!-- readme-test: serve [AGENT] [expect=TEXT] -->
                                             run it (bash or python) against a host started on a free port
                                             (``runhost AGENT``, the demo agent by default); TEXT must be in
                                             its output
    <!-- readme-test: servers -->            each line starts a server: it must answer /health, then stops
    <!-- readme-test: skip (why) -->         not run here, and why (a Docker daemon, a package index, ...)

``localhost:8000`` and port 8000 become the free port, ``0.0.0.0`` becomes loopback. The project folder is
shared by the blocks in README order, with this repository on PYTHONPATH (as ``pip install -e`` would).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, HostProcess, ServerProcess, free_port, host_env

README = REPO / "README.md"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.S | re.M)
MARKER = re.compile(r"<!-- readme-test: (?P<mode>[^>]*?) -->\s*$")


@dataclass
class Block:
    line: int
    lang: str
    body: str
    mode: str

    @property
    def words(self) -> list[str]:
        return self.mode.split()

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang or 'text'}: {self.body.splitlines()[0][:60]!r})"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(line, match["lang"], match["body"], marker["mode"].strip() if marker else ""))
    return blocks


def localised(text: str, port: int) -> str:
    text = text.replace("localhost:8000", f"127.0.0.1:{port}").replace("0.0.0.0:8000", f"127.0.0.1:{port}")
    text = re.sub(r"(--port|-p) 8000\b", rf"\g<1> {port}", text)
    return re.sub(r"(--host|-b) 0\.0\.0\.0\b", r"\1 127.0.0.1", text)


def run_env(project: Path) -> dict[str, str]:
    env = host_env(HOME=str(project))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snippet(block: Block, project: Path, port: int) -> str:
    code = localised(block.body, port)
    if block.lang == "python":
        cmd = [sys.executable, "-c", code]
    elif block.lang in ("bash", "sh"):
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    else:
        raise AssertionError(f"{block}: 'serve' runs bash or python blocks, not {block.lang!r}")
    done = subprocess.run(cmd, cwd=project, env=run_env(project), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{block} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def serve_block(block: Block, project: Path) -> None:
    words = block.words[1:]
    agent = [w for w in words if not w.startswith("expect=")]
    expected = [w.split("=", 1)[1] for w in words if w.startswith("expect=")]
    host = HostProcess(project, *agent, env={"HOME": str(project)}).start()
    try:
        out = run_snippet(block, project, host.port)
    finally:
        host.stop()
    for text in expected:
        assert text in out, f"{block}: {text!r} not in its output:\n{out}"


def servers_block(block: Block, project: Path) -> None:
    for number, line in enumerate(block.body.splitlines()):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        port = free_port()
        server = ServerProcess()
        with contextlib.ExitStack() as stack:
            server.launch(
                ["bash", "-c", "exec env " + localised(line, port)],
                cwd=project,
                env=run_env(project),
                log_path=project / f"server-{block.line}-{number}.log",
                ready_url=f"http://127.0.0.1:{port}/health",
                timeout=60,
                what=f"{block} line {line!r}",
            )
            stack.callback(server.stop)


def test_every_block_says_how_it_runs():
    unmarked = [str(b) for b in readme_blocks() if not b.mode]
    assert not unmarked, "add a <!-- readme-test: ... --> line above (see tests/e2e/docs/test_readme.py): " + ", ".join(
        unmarked
    )
    for block in readme_blocks():
        assert block.words[0] in ("file", "append", "serve", "servers", "skip"), f"{block}: unknown mode {block.mode!r}"
        if block.words[0] == "skip":
            assert re.fullmatch(r"skip \(.+\)", block.mode), f"{block}: a skip says why, as skip (reason)"


@pytest.mark.slow
def test_readme_blocks_run_in_order(tmp_path):
    project = tmp_path / "reader"
    project.mkdir()
    ran = 0
    for block in readme_blocks():
        kind = block.words[0] if block.mode else "skip"
        if kind == "file":
            (project / block.words[1]).write_text(block.body + "\n")
        elif kind == "append":
            with open(project / block.words[1], "a") as out:
                out.write(block.body + "\n")
        elif kind == "serve":
            serve_block(block, project)
            ran += 1
        elif kind == "servers":
            servers_block(block, project)
            ran += 1
    assert ran >= 3
