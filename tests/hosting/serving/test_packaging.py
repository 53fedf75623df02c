"""``pip install -e .`` as the README says: one list of dependencies, and a host that runs from any folder.

The install goes into a fresh virtual environment whose only packages are the shared test venv's (a .pth
line), with ``--no-deps --no-index --no-build-isolation``: it builds with no network.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, ServerProcess, free_port, host_env


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(canonical(re.split(r"[\[=<>!~; ]", line, maxsplit=1)[0]))
    return names


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    purelib = Path(
        subprocess.check_output(
            [str(root / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (purelib / "shared-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(root / "bin/python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "-e",
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def installed_requirements(venv: Path) -> set[str]:
    code = "import importlib.metadata as m, json; print(json.dumps(m.distribution('connectonion-host').requires or []))"
    requires = json.loads(subprocess.check_output([str(venv / "bin/python"), "-c", code], text=True, cwd="/"))
    # an extra's requirements (``; extra == "otel"``) are optional: the package's own are the rest
    return {canonical(re.split(r"[\[=<>!~; ]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r}


def test_package_dependencies_are_requirements_txt(venv):
    assert installed_requirements(venv) == requirement_names(REPO / "requirements.txt")


def test_every_installed_app_comes_from_a_declared_dependency(venv):
    """``drf_spectacular`` was in INSTALLED_APPS and missing from pyproject: every third-party app is declared."""
    code = (
        "import importlib.metadata as m, json, os; os.environ['DJANGO_SETTINGS_MODULE']='connectonion_site.settings';"
        "from django.conf import settings; dists = m.packages_distributions();"
        "print(json.dumps({a: dists.get(a.split('.')[0], []) for a in settings.INSTALLED_APPS}))"
    )
    env = host_env()
    env.pop("PYTHONPATH")
    apps = json.loads(subprocess.check_output([str(venv / "bin/python"), "-c", code], text=True, cwd="/", env=env))
    declared = installed_requirements(venv) | {"django"}
    ours = {"hosting", "trust", "sessions_app"}
    for app, dists in apps.items():
        if app.split(".")[0] in ours:
            continue
        assert {canonical(d) for d in dists} & declared, f"{app} comes from {dists}, not from requirements.txt"


def test_installed_package_hosts_a_plain_agent_from_an_empty_folder(venv, tmp_path):
    """No repository on PYTHONPATH, no API key: ``from hosting import host`` and ``python myagent.py``."""
    (tmp_path / "myagent.py").write_text(
        "from hosting import host\n\n"
        "def translate(text: str) -> str:\n    return {'hello': 'hola'}.get(text, text)\n\n"
        "if __name__ == '__main__':\n    import sys\n    host(translate, port=int(sys.argv[1]), relay_url=None)\n"
    )
    env = host_env(HOME=str(tmp_path))
    env.pop("PYTHONPATH")
    port = free_port()
    server = ServerProcess()
    server.launch(
        [str(venv / "bin/python"), "myagent.py", str(port)],
        cwd=tmp_path,
        env=env,
        log_path=tmp_path / "host.log",
        ready_url=f"http://127.0.0.1:{port}/health",
        timeout=60,
        what="python myagent.py",
    )
    try:
        body = httpx.post(f"http://127.0.0.1:{port}/input", json={"prompt": "hello"}, timeout=30).json()
        assert body["status"] == "done" and body["result"] == "hola", body
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_installed_package_serves_daphne_from_any_folder(venv, tmp_path):
    """``daphne connectonion_site.asgi:application`` from a folder that is not the repository."""
    env = host_env(HOME=str(tmp_path))
    env.pop("PYTHONPATH")
    port = free_port()
    server = ServerProcess()
    server.launch(
        [
            str(venv / "bin/python"),
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "connectonion_site.asgi:application",
        ],
        cwd=tmp_path,
        env=env,
        log_path=tmp_path / "daphne.log",
        ready_url=f"http://127.0.0.1:{port}/health",
        timeout=60,
        what="daphne",
    )
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/info").json()["name"] == "demo"
    finally:
        server.stop()
