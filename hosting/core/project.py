"""The project folder a host serves from: where it is, the ``.env`` files it loads, and the Django secret key
kept in its ``.co/`` (made on first use, 0600, and removed again when a command that made it did nothing)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def find_project_dir(start: Path | None = None) -> Path:
    """Walk up to the first folder holding ``.co/`` (stopping at home or a repo root); else cwd.

    The filesystem root is never a project: a stray ``/.co`` would otherwise capture every host started in a
    folder outside home and outside any repository (``/tmp/anything``).
    """
    start = (start or Path.cwd()).resolve()
    home = Path.home().resolve()
    for folder in (start, *start.parents):
        if folder == folder.parent and folder != start:
            break
        if (folder / ".co").is_dir() and folder != home:
            return folder
        if folder == home or (folder / ".git").exists():
            break
    return start


def load_env_files(project_dir: Path, environ: dict[str, str]) -> tuple[str, ...]:
    """Load ``<project>/.env`` then ``<AGENT_CONFIG_PATH or ~/.co>/keys.env``; the process env wins."""
    from dotenv import dotenv_values

    loaded = []
    machine = Path(environ.get("AGENT_CONFIG_PATH") or Path.home() / ".co")
    for path in (project_dir / ".env", machine / "keys.env"):
        if path.is_file():
            for key, value in dotenv_values(path).items():
                if value is not None and key not in environ:
                    environ[key] = value
            loaded.append(str(path))
    return tuple(loaded)


def secret_key(co_dir: Path, environ: dict[str, str]) -> str:
    """Django's SECRET_KEY: from the environment, else generated once into ``.co/secret_key`` (0600)."""
    if environ.get("DJANGO_SECRET_KEY"):
        return environ["DJANGO_SECRET_KEY"]
    path = co_dir / "secret_key"
    if path.is_file():
        return path.read_text(encoding="ascii").strip()
    if not co_dir.is_dir():
        co_dir.mkdir(parents=True, exist_ok=True)
        _made_here.append(co_dir)
    key = secrets.token_urlsafe(64)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key)
    _made_here.append(path)
    return key


_made_here: list[Path] = []  # what loading the settings created in this process (a new .co/, its secret_key)


def discard_unused_co_dir() -> None:
    """Remove the ``.co/`` that loading the settings just made, when nothing else was put in it.

    A command that fails before doing anything (``agentkey`` in a folder without a key) leaves no empty project.
    """
    for made in reversed(_made_here):
        with contextlib.suppress(OSError):  # rmdir refuses a folder someone has written to since: kept
            made.unlink() if made.is_file() else made.rmdir()
    _made_here.clear()
