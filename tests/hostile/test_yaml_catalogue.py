"""HARDENING F6 and A6 for every YAML file we read (issue 15 item 12): a "billion laughs" document, whose
aliases expand to 10^9 nodes from 1.6 KB, is refused wherever it appears: ``.co/host.yaml``, ``.co/sessions``
and ``.co/evals`` (served by ``/admin/sessions``), and a trust policy's front matter. No anchor or alias is
ever expanded, so refusing one costs a parse of the text, nothing more.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from common import safeyaml
from common.errors import ConfigError
from hosting.core.hostyaml import read_host_yaml
from hosting.web.admin_api import read_session_files
from tests.sessions_app.admin.conftest import API_KEY, SECRETS_ENV
from trust.policy import parse_policy

# 10 x's, then 8 levels of ten aliases each: 10^9 leaves once expanded; 1.6 KB of text.
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8)
)
SESSION_BOMB = "name: laughs\nsession_id: laughs\n" + LAUGHS + "turns: *i\n"


def test_the_loader_refuses_anchors_aliases_and_merge_keys():
    for text in ("a: &x 1\n", "a: 1\nb: *a\n", "base: &b {k: 1}\nother:\n  <<: *b\n", LAUGHS):
        with pytest.raises(safeyaml.AliasRefused, match="YAML anchors and aliases are not allowed"):
            safeyaml.load(text)
    assert safeyaml.load("a: [1, 'two', {c: null}]\nd: '*not an alias*'\n") == {
        "a": [1, "two", {"c": None}],
        "d": "*not an alias*",
    }
    with pytest.raises(yaml.YAMLError):  # tags stay refused, as with safe_load
        safeyaml.load("!!python/object/apply:os.system ['true']\n")


def test_f6_host_yaml_with_aliases_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "host.yaml"
    path.write_text(LAUGHS + "trust: *i\n")
    with pytest.raises(ConfigError, match=r"^host.yaml: YAML anchors and aliases are not allowed$"):
        read_host_yaml(path)


def test_a6_session_and_eval_files_with_aliases_are_skipped(tmp_path: Path):
    sessions, evals = tmp_path / "sessions", tmp_path / "evals"
    sessions.mkdir()
    evals.mkdir()
    (sessions / "laughs.yaml").write_text(SESSION_BOMB)
    (evals / "laughs.yaml").write_text(SESSION_BOMB)
    (sessions / "fine.yaml").write_text("name: fine\nturns: [{role: user, content: hi}]\n")
    assert [s["name"] for s in read_session_files(evals, sessions)] == ["fine"]


def test_policy_front_matter_with_aliases_is_refused():
    text = "---\n" + LAUGHS + "allow: *i\n---\nbe kind\n"
    with pytest.raises(ConfigError, match="trust policy: front matter: YAML anchors and aliases are not allowed"):
        parse_policy(text)


@pytest.fixture(scope="module")
def bombed_host(module_hosts):
    def prepare(folder: Path) -> None:
        (folder / ".co" / "sessions").mkdir(parents=True)
        (folder / ".co" / "sessions" / "laughs.yaml").write_text(SESSION_BOMB)

    return module_hosts(env=SECRETS_ENV, prepare=prepare)


def test_a6_admin_sessions_skips_a_billion_laughs_file(bombed_host):
    sid = httpx.post(bombed_host.url + "/input", json={"prompt": "hello"}, timeout=30).json()["session_id"]
    r = httpx.get(bombed_host.url + "/admin/sessions", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=100)
    assert r.status_code == 200
    assert [s["session_id"] for s in r.json()["sessions"]] == [sid]
    assert len(r.content) < 100_000
