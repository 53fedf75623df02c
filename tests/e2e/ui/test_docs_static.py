"""The /docs and /docs/api front end without a browser: the JavaScript parses, untrusted text never reaches an
HTML sink (HARDENING G9), the templates are CSP-clean and embed the agent safely, and the upload-limit texts
the page shows before sending match PROTOCOL §6.2 byte for byte."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.template.loader import render_to_string

ROOT = Path(__file__).resolve().parents[3]
STATIC = ROOT / "static" / "hosting"
TEMPLATES = ROOT / "templates" / "hosting"
SCRIPTS = sorted(STATIC.glob("*.js"))
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH")
MB = 1048576


def run_node_module(source: str) -> str:
    """Run an ES module with node (imports may name our static files by absolute file: URL)."""
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", source], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_page_has_its_scripts():
    names = {path.name for path in SCRIPTS}
    assert {"docs.js", "api.js", "dom.js", "transcript.js", "connection.js", "uploads.js"} <= names


def node_check(path: Path) -> subprocess.CompletedProcess:
    """``node --check`` parsing the file as an ES module. A plain ``node --check file.js`` is not enough on
    node 20: once it "detects" module syntax it reports success without checking the rest."""
    with path.open("rb") as source:
        return subprocess.run(
            [NODE, "--input-type=module", "--check"],
            stdin=source,
            capture_output=True,
            timeout=60,
            check=False,
        )


@needs_node
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_javascript_parses(script):
    done = node_check(script)
    assert done.returncode == 0, done.stderr.decode()


@needs_node
def test_the_syntax_check_catches_an_error_in_a_module(tmp_path):
    broken = tmp_path / "broken.js"
    broken.write_text('import { el } from "./dom.js";\nexport const x = el(\n;\n')
    assert node_check(broken).returncode != 0


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_import_names_an_export_of_a_sibling_module(script):
    for names, target in re.findall(r'import\s*\{([^}]*)\}\s*from\s*"\./([\w.-]+)"', script.read_text()):
        module = STATIC / target
        assert module.is_file(), f"{script.name} imports missing {target}"
        exported = set(re.findall(r"^export (?:async )?(?:function|class|const|let) (\w+)", module.read_text(), re.M))
        for name in (n.strip().split(" as ")[0] for n in names.split(",") if n.strip()):
            assert name in exported, f"{script.name} imports {name} that {target} does not export"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_javascript_never_writes_html(script):
    source = script.read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "createContextualFragment",
        "eval(",
        "new Function",
        "DOMParser",
        "srcdoc",
    ):
        assert sink not in source, f"{script.name} uses {sink}"


@pytest.mark.parametrize("template", ["docs.html", "api.html"])
def test_templates_allow_a_strict_csp(template):
    source = (TEMPLATES / template).read_text()
    scripts = re.findall(r"<script\b[^>]*>", source)
    assert scripts, "the page loads its module"
    for tag in scripts:
        assert 'type="module"' in tag and "src=" in tag, f"inline script: {tag}"
    assert not re.search(r"\son[a-z]+\s*=", source), "inline event handler"
    assert not re.search(r"\sstyle\s*=", source), "inline style attribute"
    assert "javascript:" not in source
    assert not re.search(r"(src|href)=\"https?://", source), "external resource (the page must work offline)"
    assert '|json_script:"agent-data"' in source


HOSTILE = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"


def agent_context(**overrides):
    agent = {
        "name": HOSTILE,
        "address": "0x" + "ab" * 32,
        "tools": ["calculate", HOSTILE],
        "model": HOSTILE,
        "trust": "careful",
        "version": "0.1.0",
        "accepted_inputs": {
            "text": True,
            "images": True,
            "files": {"max_file_size_mb": 10, "max_files_per_request": 10},
        },
    }
    agent.update(overrides)
    return agent


@pytest.mark.parametrize("template", ["hosting/docs.html", "hosting/api.html"])
def test_templates_escape_the_agent_everywhere(template):
    html = render_to_string(template, {"agent": agent_context(), "ws_path": "/ws"})
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html
    block = re.search(r'<script id="agent-data" type="application/json">(.*?)</script>', html, re.S)
    assert block, "json_script block"
    assert json.loads(block.group(1))["name"] == HOSTILE
    assert "/static/hosting/" in html


def test_docs_template_declares_every_test_id():
    html = render_to_string("hosting/docs.html", {"agent": agent_context(name="demo"), "ws_path": "/ws"})
    static_ids = set(re.findall(r'data-testid="([^"]+)"', html))
    built_ids = set()
    for script in SCRIPTS:
        built_ids |= set(re.findall(r'"([a-z][a-z-]+)"', script.read_text()))
    required = {
        "prompt-input",
        "send-button",
        "cancel-button",
        "new-button",
        "file-input",
        "message-user",
        "message-agent",
        "tool-card",
        "approval-approve",
        "approval-reject",
        "approval-session",
        "ask-user-input",
        "ask-user-send",
        "status",
        "event-thinking",
        "error",
    }
    assert required <= static_ids | built_ids, required - (static_ids | built_ids)
    assert 'data-ws-path="/ws"' in html


# ---- upload limits: the page's texts equal the host's (PROTOCOL §6.2) -----------------------------


@needs_node
def test_sizes_are_rounded_like_python():
    sizes = [
        0,
        1,
        52428,
        52429,
        104857,
        262144,
        786432,
        1048576,
        1572864,
        10 * MB + 1,
        157497753,
        11 * MB + 524288,
    ]
    uploads = (STATIC / "uploads.js").as_uri()
    out = run_node_module(
        f"import {{ formatMb }} from {json.dumps(uploads)};\n"
        f"console.log(JSON.stringify({json.dumps(sizes)}.map(formatMb)));"
    )
    assert json.loads(out) == [f"{size / MB:.1f}" for size in sizes]


@needs_node
def test_limit_messages_match_the_protocol():
    uploads = (STATIC / "uploads.js").as_uri()
    cases = {
        "files": {"files": [[f"f{i}.txt", 10] for i in range(4)], "images": []},
        "file_size": {"files": [["video.mp4", 157497753]], "images": []},
        "images": {"files": [], "images": [[f"i{i}.png", 10] for i in range(4)]},
        "image_size": {"files": [], "images": [["a.png", 10], ["b.png", 2 * MB + 1]]},
        "fine": {"files": [["a.txt", 2 * MB]], "images": [["b.png", 2 * MB]]},
    }
    out = run_node_module(
        f"import {{ limitError }} from {json.dumps(uploads)};\n"
        f"const cases = {json.dumps(cases)};\n"
        "const limits = { maxFileSizeMb: 2, maxFiles: 3, images: true };\n"
        "const item = (kind) => ([name, size]) => ({ kind, file: { name, size } });\n"
        "const result = Object.fromEntries(Object.entries(cases).map(([key, c]) =>\n"
        "  [key, limitError([...c.files.map(item('file')), ...c.images.map(item('image'))], limits)]));\n"
        "console.log(JSON.stringify(result));"
    )
    assert json.loads(out) == {
        "files": "Too many files: 4 (max: 3). Increase max_files_per_request in host.yaml",
        "file_size": "File too large: video.mp4 (150.2MB, max: 2MB). Increase max_file_size in host.yaml",
        "images": "Too many images: 4 (max: 3). Increase max_files_per_request in host.yaml",
        "image_size": "Image too large: image 1 (2.0MB, max: 2MB). Increase max_file_size in host.yaml",
        "fine": None,
    }


# ---- signing in the browser: what the page signs verifies under PROTOCOL §2.2 / §2.5 ---------------


@needs_node
def test_browser_signatures_verify_like_the_protocol_says():
    from nacl.signing import SigningKey, VerifyKey

    seed = bytes(range(32))
    signing = (STATIC / "signing.js").as_uri()
    to = "0x" + "cd" * 32
    payload = {"prompt": 'héllo ✓ "q" \\ \n', "session": {"z": 1, "a": [True, None, 1.5]}, "b": 2}
    out = run_node_module(
        f"import {{ BrowserIdentity }} from {json.dumps(signing)};\n"
        f"const id = await BrowserIdentity.fromHex({json.dumps(seed.hex())});\n"
        f"const envelope = await id.envelope({json.dumps(payload)}, {json.dumps(to)});\n"
        f"const headers = await id.readHeaders('GET', '/sessions/abc', {json.dumps(to)});\n"
        "console.log(JSON.stringify({ address: id.address, envelope, headers }));"
    )
    result = json.loads(out)
    key = SigningKey(seed)
    assert result["address"] == "0x" + key.verify_key.encode().hex()
    envelope = result["envelope"]
    assert envelope["from"] == result["address"]
    signed = envelope["payload"]
    assert {k: signed[k] for k in payload} == payload
    assert signed["to"] == to and isinstance(signed["timestamp"], int) and signed["nonce"]
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    VerifyKey(key.verify_key.encode()).verify(text, bytes.fromhex(envelope["signature"]))

    headers = result["headers"]
    read = {
        "method": "GET",
        "path": "/sessions/abc",
        "query": "",
        "body_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "timestamp": int(headers["X-Co-Timestamp"]),
        "request_id": headers["X-Co-Request-Id"],
        "to": to,
    }
    text = json.dumps(read, sort_keys=True, separators=(",", ":")).encode()
    VerifyKey(key.verify_key.encode()).verify(text, bytes.fromhex(headers["X-Co-Signature"]))
    assert headers["X-Co-From"] == result["address"] and headers["X-Co-To"] == to


# ---- /docs/api: routes and curl bodies from an OpenAPI 3 document -----------------------------------

SPECTACULAR_LIKE = {
    "openapi": "3.0.3",
    "info": {"title": "ConnectOnion host", "version": "0.1.0"},
    "paths": {
        "/input": {
            "post": {
                "operationId": "input_create",
                "summary": "Run one turn",
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InputRequest"}}},
                    "required": True,
                },
                "security": [{}],
                "responses": {
                    "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Result"}}}}
                },
            }
        },
        "/sessions/{session_id}": {
            "get": {
                "parameters": [{"in": "path", "name": "session_id", "schema": {"type": "string"}, "required": True}],
                "responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}}},
            }
        },
        "/admin/logs": {"get": {"security": [{"bearerAuth": []}], "responses": {"200": {"description": "log"}}}},
    },
    "components": {
        "schemas": {
            "InputRequest": {
                "type": "object",
                "properties": {
                    "prompt": {"type": "string"},
                    "session": {"type": "object"},
                    "images": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["prompt"],
            },
            "Result": {
                "allOf": [
                    {
                        "type": "object",
                        "properties": {"status": {"type": "string", "enum": ["done", "failed"]}},
                    },
                    {"type": "object", "properties": {"duration_ms": {"type": "integer"}}},
                ]
            },
        }
    },
}


@needs_node
def test_api_page_routes_come_from_the_openapi_document():
    module = (STATIC / "openapi.js").as_uri()
    out = run_node_module(
        f"import {{ routesFromOpenApi }} from {json.dumps(module)};\n"
        f"console.log(JSON.stringify(routesFromOpenApi({json.dumps(SPECTACULAR_LIKE)}, 'abc-123')));"
    )
    routes = {f"{r['method']} {r['path']}": r for r in json.loads(out)}
    assert list(routes) == ["POST /input", "GET /sessions/{session_id}", "GET /admin/logs"]
    assert routes["POST /input"]["body"] == {"prompt": "Hello"}
    assert routes["POST /input"]["response"] == {"status": "done", "duration_ms": 0}
    assert routes["POST /input"]["admin"] is False
    assert routes["GET /sessions/{session_id}"]["params"] == {"session_id": "abc-123"}
    assert routes["GET /sessions/{session_id}"]["body"] is None
    assert routes["GET /admin/logs"]["admin"] is True


@needs_node
def test_built_in_routes_cover_the_protocol_table():
    module = (STATIC / "openapi.js").as_uri()
    out = run_node_module(
        f"import {{ builtinRoutes }} from {json.dumps(module)};\n"
        "console.log(JSON.stringify(builtinRoutes('abc').map((r) => `${r.method} ${r.path}`)));"
    )
    assert set(json.loads(out)) >= {
        "POST /input",
        "GET /sessions/{session_id}",
        "GET /sessions",
        "GET /health",
        "GET /info",
        "GET /docs",
        "GET /",
        "GET /admin/logs",
        "GET /admin/sessions",
    }
