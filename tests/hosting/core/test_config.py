"""Configuration precedence and start-up errors, through real `runhost` processes."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.conftest import MANAGE, free_port, host_env


def write_yaml(project, text: str) -> None:
    (project / ".co").mkdir(exist_ok=True)
    (project / ".co/host.yaml").write_text(text)


def test_host_yaml_values_apply(start_host, project):
    write_yaml(project, "max_file_size: 3\nmax_files_per_request: 4\nname: yaml-agent\nresult_ttl: 120\n")
    host = start_host("tests.agents:echo_factory")
    info = httpx.get(host.url + "/info").json()
    assert info["name"] == "yaml-agent"
    assert info["accepted_inputs"]["files"] == {"max_file_size_mb": 3, "max_files_per_request": 4}
    sid = httpx.post(host.url + "/input", json={"prompt": "x"}).json()["session_id"]
    record = httpx.get(f"{host.url}/sessions/{sid}").json()
    assert record["expires"] - record["created"] == 120


def test_command_line_wins_over_host_yaml(start_host, project):
    write_yaml(project, "max_file_size: 3\nmax_files_per_request: 4\ntrust: strict\n")
    host = start_host("tests.agents:echo_factory", "--max-file-size", "7", "--trust", "open")
    info = httpx.get(host.url + "/info").json()
    assert info["accepted_inputs"]["files"] == {"max_file_size_mb": 7, "max_files_per_request": 4}
    assert info["trust"] == "open"


def test_production_env_requires_signatures_unless_trust_given(start_host, project, tmp_path):
    strict = start_host("tests.agents:echo_factory", env={"CONNECTONION_ENV": "production"})
    assert httpx.get(strict.url + "/info").json()["trust"] == "strict"
    r = httpx.post(strict.url + "/input", json={"prompt": "unsigned"})
    assert r.status_code == 401
    assert "error" in r.json()
    other = tmp_path / "other"
    other.mkdir()
    opened = start_host(
        "tests.agents:echo_factory", "--trust", "open", env={"CONNECTONION_ENV": "production"}, folder=other
    )
    assert httpx.get(opened.url + "/info").json()["trust"] == "open"
    assert httpx.post(opened.url + "/input", json={"prompt": "unsigned"}).json()["result"] == "echo: unsigned"


def run_host_briefly(project, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(MANAGE), "runhost", *args, "--no-relay", "--port", str(free_port())]
    return subprocess.run(cmd, cwd=project, env=host_env(), capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ('port: "abc"\n', "port"),
        ("max_file_size: ten\n", "max_file_size"),
        ("result_ttl: -5\n", "result_ttl"),
        ("- just\n- a list\n", "mapping"),
        ("port: [unclosed\n", "YAML"),
    ],
)
def test_bad_host_yaml_is_one_clear_line_and_nonzero_exit(project, yaml_text, needle):
    write_yaml(project, yaml_text)
    done = run_host_briefly(project)
    assert done.returncode != 0
    output = (done.stdout + done.stderr).strip()
    assert "Traceback" not in output
    assert "host.yaml" in output and needle in output
    assert len(output.splitlines()) == 1, output


def test_unknown_host_yaml_key_is_a_warning_with_a_suggestion(start_host, project):
    # PROTOCOL §9 (wins over the issue text): unknown keys are ignored with a warning
    write_yaml(project, "max_file_sise: 3\n")
    host = start_host("tests.agents:echo_factory")
    assert "max_file_sise" in host.output() and "max_file_size" in host.output()
    assert httpx.get(host.url + "/info").json()["accepted_inputs"]["files"]["max_file_size_mb"] == 10


def test_bad_command_line_values_fail_cleanly(project):
    done = run_host_briefly(project, "no_such_module:create_agent")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "no_such_module" in done.stderr


def test_dotenv_in_project_folder_is_loaded_and_announced(start_host, project):
    (project / ".env").write_text("SOME_TEST_KEY=abc\n")
    host = start_host("tests.agents:echo_factory")
    assert "INFO: Loaded environment" in host.output()
    assert str(project / ".env") in host.output() or ".env" in host.output()


def test_project_folder_is_found_by_walking_up_to_the_first_dot_co(tmp_path):
    from hosting.core.project import find_project_dir

    (tmp_path / "proj/.co").mkdir(parents=True)
    (tmp_path / "proj/sub/deeper").mkdir(parents=True)
    assert find_project_dir(tmp_path / "proj/sub/deeper") == (tmp_path / "proj").resolve()


def test_the_filesystem_root_is_never_the_project(tmp_path):
    """Outside home and any repository the walk reaches ``/``: a ``/.co`` there must not capture the host."""
    from hosting.core.project import find_project_dir

    (tmp_path / "lonely").mkdir()
    assert find_project_dir(tmp_path / "lonely") == (tmp_path / "lonely").resolve()
