"""Start the released connectonion 1.9.2 ``host()`` with one of the bench agents.

    python bench/reference_host.py --port P [--agent instant|sleep] [--trust open]

Run with the project folder (a temp dir) as the working directory: the reference keeps its
``.co/`` (keys, ``session_results.jsonl``) there.

Start-up fix: ``host()`` 1.9.2 first calls ``connectonion.cli.commands.agent_index.refresh()``
(server.py line 1253, "refresh the command index for co that Codex and Claude Code read"). When
``~/.codex`` or ``~/.claude`` exists, that builds the whole ``co`` typer app to render a help index and,
with typer 0.29, ``synology_cli.common_params()`` raises
``TypeError: TyperOption.__init__() got an unexpected keyword argument 'type'`` -- the host never starts.
It would also rewrite ``~/.claude/CLAUDE.md``. We replace ``refresh`` with a no-op returning ``[]`` (what
it returns on a machine without those folders) before calling ``host()``; nothing else is patched and
typer stays at the installed version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agent", default="instant", choices=["instant", "sleep"])
    parser.add_argument("--trust", default="open")
    args = parser.parse_args()

    import connectonion.cli.commands.agent_index as agent_index

    agent_index.refresh = lambda app=None: []

    from connectonion import host

    from bench.agents import instant_factory, sleep_factory

    factory = instant_factory if args.agent == "instant" else sleep_factory
    host(factory, port=args.port, trust=args.trust, relay_url=None, co_dir=Path.cwd() / ".co")


if __name__ == "__main__":
    main()
