"""Run the released connectonion 1.9.2 ``host()`` on ``tests.co_agents.create_co_agent`` (a real ``Agent`` on a
stub LLM) for tests/hosting/conversation, with the working directory as its project folder:

    python tests/hosting/conversation/released_host.py --port P

Start-up fix (the same as bench/reference_host.py): ``host()`` 1.9.2 first calls
``connectonion.cli.commands.agent_index.refresh()``, which, when ``~/.codex`` or ``~/.claude`` exists, builds the
whole ``co`` typer app and with typer 0.29 dies with ``TypeError: TyperOption.__init__() got an unexpected
keyword argument 'type'``. We stub ``refresh`` (it returns ``[]`` on a machine without those folders); typer
stays at the installed version and nothing else is patched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--trust", default="careful")
    args = parser.parse_args()

    import connectonion.cli.commands.agent_index as agent_index

    agent_index.refresh = lambda app=None: []

    from connectonion import host

    from tests.co_agents import create_co_agent

    host(create_co_agent, port=args.port, trust=args.trust, relay_url=None, co_dir=Path.cwd() / ".co")


if __name__ == "__main__":
    main()
