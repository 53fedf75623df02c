"""/docs and /docs/api as a newcomer first sees them (issue 17's UI items), in Debian's chromium.

Screenshots go to tests/artifacts/ (docs-first-*.png)."""

from __future__ import annotations

import pytest

from tests.e2e.ui import test_docs_browser as base

# The browser module's fixtures and helpers, shared (one host per module, a fresh context per test).
ARTIFACTS, TIMEOUT_MS, agent_reply, send, tid, wait_ready = (
    base.ARTIFACTS,
    base.TIMEOUT_MS,
    base.agent_reply,
    base.send,
    base.tid,
    base.wait_ready,
)
browser, docs_host, open_docs, strict_host = base.browser, base.docs_host, base.open_docs, base.strict_host

pytestmark = pytest.mark.browser


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"docs-first-{name}.png"), full_page=False)


def test_api_page_shows_user_descriptions_in_the_order_a_user_meets_the_routes(open_docs):
    page = open_docs(path="/docs/api")
    page.wait_for_selector(tid("endpoint-description"))
    routes = page.eval_on_selector_all(
        tid("endpoint"), "nodes => nodes.map(n => n.dataset.method + ' ' + n.dataset.path)"
    )
    assert routes[:6] == [
        "POST /input",
        "GET /sessions/{session_id}",
        "GET /sessions",
        "GET /health",
        "GET /info",
        "GET /",
    ], routes
    first_admin = next(i for i, r in enumerate(routes) if "/admin/" in r or "/superadmin/" in r)
    assert all("/admin/" in r or "/superadmin/" in r for r in routes[first_admin:-1]) and routes[-1] == "WS /ws"
    text = page.locator("main").inner_text()
    for internal in ("``", "PROTOCOL", "§", "D21", "event loop", "thread"):
        assert internal not in text, internal
    assert page.locator(f'[data-path="/input"] {tid("endpoint-description")} code').first.inner_text() == "session"
    source = page.locator(tid("api-source")).inner_text()
    assert "ConnectOnion agent host, version 0.1.0" in source, source
    shot(page, "api")


def test_api_page_curl_for_input_is_the_simple_request_with_its_variants(open_docs):
    page = open_docs(path="/docs/api")
    page.wait_for_selector(tid("endpoint-description"))
    curls = page.locator(f'[data-testid="endpoint"][data-path="/input"] {tid("curl")}').all_inner_texts()
    assert '\'{"prompt":"Translate hello to Spanish"}\'' in curls[0], curls[0]
    assert len(curls) == 3 and '"session"' in curls[1] and '"files"' in curls[2], curls
    assert all('"signature"' not in c for c in curls)


def test_strict_without_a_key_names_the_reason_once_and_offers_a_key(open_docs, strict_host):
    sockets = []
    page = open_docs(base=strict_host, ready=False)
    page.on("websocket", lambda ws: sockets.append(ws))
    page.reload()  # count this load's sockets from the start
    page.wait_for_function("() => document.querySelectorAll('[data-testid=error]').length >= 1")
    while len(sockets) < 3:  # two retries after the first refusal
        page.wait_for_event("websocket", timeout=TIMEOUT_MS)
    page.wait_for_function("() => /refused/.test(document.querySelector('[data-testid=status]').textContent)")
    status = page.locator(tid("status")).inner_text()
    assert "refused (unauthorized: signed request required)" in status and "origin" not in status, status
    assert page.locator(tid("error")).count() == 1
    assert page.locator(tid("offer-key")).count() == 1
    shot(page, "strict-refused")
    page.click(tid("offer-key"))
    wait_ready(page)
    assert "Signing as" in page.locator(tid("identity-status")).inner_text()


def inside(page, selector: str, container: str = '[data-testid="transcript"]') -> bool:
    return page.evaluate(
        """([selector, container]) => {
        const node = [...document.querySelectorAll(selector)].pop(), box = document.querySelector(container);
        const a = node.getBoundingClientRect(), b = box.getBoundingClientRect();
        return a.top >= b.top - 1 && a.bottom <= b.bottom + 1 && a.bottom <= window.innerHeight + 1;
    }""",
        [selector, container],
    )


def test_a_questions_answer_buttons_are_scrolled_into_view(open_docs):
    page = open_docs(viewport=(1280, 700))
    for _ in range(2):  # a transcript taller than its box
        answers = send(page, "help")
        agent_reply(page, answers)
        wait_ready(page)
    send(page, "quiz me")
    page.wait_for_selector(tid("ask-user-option"))
    page.wait_for_function("""() => { const n = [...document.querySelectorAll('[data-testid=ask-user-option]')].pop();
        const b = document.querySelector('[data-testid=transcript]').getBoundingClientRect();
        return n.getBoundingClientRect().bottom <= b.bottom + 1; }""")
    assert inside(page, tid("ask-user-option"))
    shot(page, "question-in-view")
    page.locator(tid("ask-user-option")).first.click()


def test_a_fresh_page_cancel_approval_and_upload_show_nothing_alarming(open_docs, tmp_path):
    page = open_docs()
    # The page has its conversation's id before anything is stored: the panel's first poll finds nothing (404).
    page.wait_for_function(
        "() => /nothing stored yet/.test(document.querySelector('[data-testid=session-poll]').textContent)"
    )
    status = page.locator(tid("session-status"))
    assert status.get_attribute("data-state") in ("", None) and "not stored" not in status.inner_text()
    assert "404" not in page.locator(tid("session-panel")).inner_text()
    shot(page, "fresh")

    send(page, "count to 40 slowly")
    page.wait_for_selector(tid("tool-card"))
    page.click(tid("cancel-button"))
    wait_ready(page)
    assert page.locator(tid("error")).count() == 0
    assert page.locator(tid("notice")).filter(has_text="Cancelled").count() == 1

    send(page, "save a note: milk")
    page.wait_for_selector(tid("approval-approve"))
    card = page.locator(tid("approval-card")).last
    assert "{'text'" not in card.inner_text() and card.inner_text().count("milk") == 1, card.inner_text()
    shot(page, "approval")
    page.click(tid("approval-approve"))
    wait_ready(page)

    note = tmp_path / "notes.txt"
    note.write_text("hello")
    page.set_input_files(tid("file-input"), str(note))
    answers = send(page, "read my file")
    agent_reply(page, answers)
    received = page.locator(tid("files-received")).last.inner_text()
    assert "notes.txt" in received and "/" not in received, received


def test_api_page_documents_the_websocket_messages_from_asyncapi(open_docs):
    page = open_docs(path="/docs/api")
    page.wait_for_selector(tid("ws-publish"))
    sent = page.locator(tid("ws-publish")).inner_text()
    received = page.locator(tid("ws-subscribe")).inner_text()
    for name in ("INPUT", "ASK_USER_RESPONSE", "APPROVAL_RESPONSE", "INTERRUPT", "ATTACH"):
        assert name in sent, name
    for name in ("ask_user", "approval_needed", "OUTPUT", "ERROR", "tool_result"):
        assert name in received, name
    assert "ASK_USER_RESPONSE" in page.locator(tid("ws-snippet")).inner_text()
    page.locator('[data-path="/ws"]').scroll_into_view_if_needed()
    shot(page, "api-ws")
