"""--reload restarts on agent code and host.yaml changes; --workers N serves from N processes sharing .co/."""

from __future__ import annotations

import httpx
import psutil

from tests.support.wait import wait_for

AGENT = 'def create_agent():\n    return lambda prompt: "{tag}: " + prompt\n'


def ask(host, prompt: str = "hi") -> httpx.Response:
    return httpx.post(host.url + "/input", json={"prompt": prompt}, timeout=20)


def eventually(check, timeout: float = 60.0):
    return wait_for(check, timeout, "the reload or restart", interval=0.2, ignore=(httpx.HTTPError,))


def worker_pids(supervisor: psutil.Process) -> list[int]:
    pids = []
    for child in supervisor.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "hosting.serving.worker" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


def test_reload_picks_up_agent_code_and_host_yaml_keeping_data(start_host, project):
    (project / "myagent.py").write_text(AGENT.format(tag="v1"))
    (project / ".co").mkdir()
    (project / ".co" / "host.yaml").write_text("# edited below while the host runs\n")
    host = start_host("myagent:create_agent", "--reload")
    first = ask(host).json()
    assert first["result"] == "v1: hi"

    def agent_edited_and_applied() -> bool:
        # rewritten on every poll: a reloader that just started (late, on a loaded machine) takes its first look
        # at the files before it watches them, and would take an early edit for the starting state
        (project / "myagent.py").write_text(AGENT.format(tag="v2"))
        return ask(host).json().get("result") == "v2: hi"

    eventually(agent_edited_and_applied)

    def edited_and_applied() -> bool:
        (project / ".co" / "host.yaml").write_text("max_files_per_request: 3\n")
        return httpx.get(host.url + "/info").json()["accepted_inputs"]["files"]["max_files_per_request"] == 3

    eventually(edited_and_applied)
    # .co/ survives restarts: the first session is still there
    assert httpx.get(f"{host.url}/sessions/{first['session_id']}").json()["status"] == "done"


def test_two_workers_serve_one_port_and_share_results(start_host, project):
    (project / "myagent.py").write_text(AGENT.format(tag="w"))
    host = start_host("myagent:create_agent", "--workers", "2")
    supervisor = psutil.Process(host.proc.pid)
    eventually(lambda: len(worker_pids(supervisor)) == 2)
    ids = [ask(host, f"p{i}").json()["session_id"] for i in range(20)]
    # whichever worker answers, every result is readable
    for sid in ids:
        with httpx.Client() as fresh:  # a new connection may land on the other worker
            assert fresh.get(f"{host.url}/sessions/{sid}").json()["status"] == "done"
    lines = (project / ".co" / "session_results.jsonl").read_text().splitlines()
    assert len(lines) == 40  # one running and one done line per turn, none lost or doubled


def test_a_killed_worker_is_restarted(start_host, project):
    (project / "myagent.py").write_text(AGENT.format(tag="w"))
    host = start_host("myagent:create_agent", "--workers", "2")
    supervisor = psutil.Process(host.proc.pid)
    victim = eventually(lambda: worker_pids(supervisor))[0]
    psutil.Process(victim).kill()
    eventually(lambda: len([pid for pid in worker_pids(supervisor) if pid != victim]) == 2)
    assert all(ask(host).status_code == 200 for _ in range(5))
