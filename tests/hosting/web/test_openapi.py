"""/openapi.json describes the real HTTP API: every live response below validates against its schema."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest
from openapi_schema_validator import OAS30Validator

from tests.conftest import REPO, host_env

API_KEY = "openapi-test-key-5521"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from tests.conftest import HostProcess

    h = HostProcess(tmp_path_factory.mktemp("project"), env={"OPENONION_API_KEY": API_KEY}).start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def schema(host) -> dict:
    r = httpx.get(f"{host.url}/openapi.json", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    return doc


def _operation(doc: dict, method: str, path: str) -> dict:
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return item[method.lower()]
    raise AssertionError(f"{method} {path} is not in the schema")


def check(doc: dict, response: httpx.Response) -> None:
    """The status is documented for this operation and the body validates against its schema."""
    request = response.request
    operation = _operation(doc, request.method, request.url.path)
    documented = operation["responses"].get(str(response.status_code))
    assert documented, f"{request.method} {request.url.path} -> {response.status_code} undocumented"
    content = documented["content"]
    media = response.headers["content-type"].split(";")[0]
    if media == "text/plain":
        assert "text/plain" in content
        return
    body_schema = content["application/json"]["schema"]
    OAS30Validator({**body_schema, "components": doc["components"]}).validate(response.json())


def test_schema_lists_every_route(schema):
    assert set(schema["paths"]) >= {
        "/input",
        "/sessions",
        "/sessions/{session_id}",
        "/health",
        "/info",
        "/admin/logs",
        "/admin/sessions",
        "/admin/trust/promote",
        "/admin/trust/level/{address}",
        "/superadmin/add",
    }
    errors = schema["paths"]["/input"]["post"]["responses"]
    assert {"400", "401", "403", "409", "413", "500"} <= set(errors)


def test_live_responses_validate(host, schema):
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=host.url, timeout=30) as c:
        done = c.post("/input", json={"prompt": "calculate (2+3)*7"})
        sid = done.json()["session_id"]
        responses = [
            done,
            c.get("/"),
            c.get("/health"),
            c.get("/info"),
            c.post("/input", json={}),
            c.post("/input", content=b"{not json", headers={"Content-Type": "application/json"}),
            c.post("/input", json={"prompt": 5}),
            c.post("/input", content=b"prompt=x", headers={"Content-Type": "text/plain"}),
            c.get("/sessions"),
            c.get(f"/sessions/{sid}"),
            c.get("/sessions/no-such-session"),
            c.get("/sessions?limit=0"),
            c.get("/admin/logs", headers=bearer),
            c.get("/admin/logs"),
            c.get("/admin/logs?lines=x", headers=bearer),
            c.get("/admin/sessions", headers=bearer),
            c.get("/admin/sessions"),
            c.get(f"/admin/trust/level/0x{'ab' * 32}"),
            c.post("/admin/trust/promote", json={"payload": {"client_id": "x"}}),
            c.post("/superadmin/add", json={}),
        ]
    statuses = set()
    for response in responses:
        check(schema, response)
        statuses.add(response.status_code)
    assert {200, 400, 401, 404, 415} <= statuses


def test_docs_api_page_still_served(host):
    r = httpx.get(f"{host.url}/docs/api", timeout=10)
    assert r.status_code == 200 and "openapi" in r.text.lower()


def test_spectacular_validate_fail_on_warn(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "manage.py"),
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--format",
            "openapi-json",
            "--file",
            str(tmp_path / "schema.json"),
        ],
        cwd=tmp_path,
        env=host_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "schema.json").stat().st_size > 1000
