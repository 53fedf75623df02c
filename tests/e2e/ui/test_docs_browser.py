"""/docs in a real browser against a real host: `manage.py runhost` with the built-in demo agent on a free
loopback port, driven by Playwright through Debian's chromium. Covers the chat over /ws (tool cards, answer,
approval, ask_user, cancel, new conversation), attachments and their limits, resuming a running turn after a
reload, the HTTP panel, the API page, phone width, and untrusted text rendered as text (HARDENING G9).
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import HostProcess

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright==1.65.2)"
)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MAX_FILE_SIZE_MB = 1
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def docs_host(tmp_path_factory):
    """One demo-agent host (the shared ``HostProcess`` of tests/conftest.py) for the whole module: a
    fresh browser context per test keeps the tests apart, and starting a host per test would be slow."""
    project = tmp_path_factory.mktemp("docs-project")
    host = HostProcess(project, "--trust", "careful", "--max-file-size", str(MAX_FILE_SIZE_MB)).start()
    try:
        yield host.url
    finally:
        host.stop()
        if os.environ.get("CO_TEST_SHOW_HOST_OUTPUT"):
            print(host.output())


@pytest.fixture(scope="module")
def strict_host(tmp_path_factory):
    """A demo-agent host that only accepts signed requests."""
    host = HostProcess(tmp_path_factory.mktemp("docs-strict"), "--trust", "strict").start()
    try:
        yield host.url
    finally:
        host.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watched:
    """A page plus what it did that it should not: JavaScript errors and dialogs (an XSS would alert)."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def open_docs(browser, docs_host):
    """Open /docs in a fresh browser context (empty localStorage); checks no errors or dialogs at the end."""
    contexts = []
    watched: list[Watched] = []

    def opener(viewport=(1280, 860), path="/docs", base=None, context=None, ready=True, **options):
        if context is None:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, **options)
            context.set_default_timeout(TIMEOUT_MS)
            contexts.append(context)
        page = context.new_page()
        watch = Watched(page)
        watched.append(watch)
        page.goto((base or docs_host) + path)
        if path == "/docs" and ready:
            wait_ready(page)
        return page

    yield opener
    for watch in watched:
        assert watch.errors == [], watch.errors
        assert watch.dialogs == [], watch.dialogs
    for context in contexts:
        context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"docs-{name}.png"), full_page=False)


def tid(name: str) -> str:
    """A CSS selector for a data-testid."""
    return f'[data-testid="{name}"]'


def wait_ready(page) -> None:
    page.wait_for_selector(f'{tid("status")}[data-state="ready"]')


def send(page, prompt: str) -> int:
    """Type and send a prompt with Enter; returns the index its answer will have (see `agent_reply`)."""
    answers = page.locator(tid("message-agent")).count()
    page.fill(tid("prompt-input"), prompt)
    page.press(tid("prompt-input"), "Enter")
    return answers


def agent_reply(page, index: int) -> str:
    """Wait for the agent's answer number `index` and return its text."""
    reply = page.locator(tid("message-agent")).nth(index)
    reply.wait_for()
    return reply.locator(".message-text").inner_text()


def test_a_prompt_shows_its_tool_card_and_the_answer(open_docs):
    page = open_docs()
    answer = agent_reply(page, send(page, "calculate (2+3)*7"))
    assert answer == "(2+3)*7 = 35"
    card = page.locator(tid("tool-card"))
    assert card.count() == 1
    assert card.get_attribute("data-status") == "completed"
    assert card.locator(".tool-name").inner_text() == "calculate"
    card.locator("summary").click()
    assert json.loads(card.locator(tid("tool-args")).inner_text()) == {"expression": "(2+3)*7"}
    assert card.locator(tid("tool-result")).inner_text() == "35"
    assert page.locator(tid("message-user")).inner_text().strip() == "calculate (2+3)*7"
    assert page.locator(tid("event-thinking")).count() >= 1
    wait_ready(page)
    shot(page, "tool-card")


def test_enter_sends_and_shift_enter_adds_a_line(open_docs):
    page = open_docs()
    page.fill(tid("prompt-input"), "my name is Ada")
    page.press(tid("prompt-input"), "Shift+Enter")
    assert page.locator(tid("message-user")).count() == 0
    assert page.input_value(tid("prompt-input")) == "my name is Ada\n"
    page.press(tid("prompt-input"), "Enter")
    assert agent_reply(page, 0) == "Nice to meet you, Ada!"


def test_approving_the_gated_tool_runs_it(open_docs):
    page = open_docs()
    answer = send(page, "save a note: buy milk")
    page.wait_for_selector(tid("approval-approve"))
    assert page.locator(tid("status")).get_attribute("data-state") == "waiting"
    assert json.loads(page.locator(tid("approval-args")).inner_text()) == {"text": "buy milk"}
    shot(page, "approval")
    page.click(tid("approval-approve"))
    assert agent_reply(page, answer) == "Done: note saved: buy milk."
    assert page.locator(tid("approval-outcome")).inner_text() == "Approved once"
    assert page.locator(tid("tool-card")).get_attribute("data-status") == "completed"


def test_rejecting_the_gated_tool_skips_it(open_docs):
    page = open_docs()
    answer = send(page, "save a note: sell the car")
    page.fill(tid("approval-feedback"), "not today")
    page.click(tid("approval-reject"))
    assert agent_reply(page, answer) == "OK, I did not save the note."
    assert page.locator(tid("approval-outcome")).inner_text() == "Rejected"


def test_a_question_is_answered_with_an_option_or_text(open_docs):
    page = open_docs()
    answer = send(page, "quiz me")
    page.wait_for_selector(tid("ask-user-question"))
    assert page.locator(tid("ask-user-question")).inner_text() == "What is the capital of France?"
    page.locator(tid("ask-user-option"), has_text="Paris").click()
    assert agent_reply(page, answer) == "Correct!"
    wait_ready(page)
    answer = send(page, "quiz me")
    page.locator(f'{tid("ask-user-card")}[data-state="waiting"] {tid("ask-user-input")}').fill("Lyon")
    page.locator(f'{tid("ask-user-card")}[data-state="waiting"] {tid("ask-user-send")}').click()
    assert agent_reply(page, answer) == "Not quite: it is Paris, not Lyon."


PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2b1f2f50000000049454e44ae426082"
)


def test_attached_files_and_images_reach_the_agent(open_docs, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The secret word is onion.")
    dot = tmp_path / "dot.png"
    dot.write_bytes(PNG_1X1)
    page = open_docs()
    page.set_input_files(tid("file-input"), [str(notes), str(dot)])
    chips = page.locator(f"{tid('attachments')} {tid('attachment-chip')}")
    assert chips.count() == 2
    assert page.locator(f"{tid('attachments')} img").count() == 1
    answer = agent_reply(page, send(page, "read the file"))
    assert "secret word is onion" in answer
    assert "1x1 PNG" in answer
    assert "notes.txt" in page.locator(tid("files-received")).inner_text()
    assert page.locator(f"{tid('attachments')} {tid('attachment-chip')}").count() == 0
    assert page.locator(f"{tid('message-user')} {tid('attachment-chip')}").count() == 2
    shot(page, "attachments")


def test_a_removed_attachment_is_not_sent(open_docs, tmp_path):
    notes = tmp_path / "unwanted.txt"
    notes.write_text("nothing")
    page = open_docs()
    page.set_input_files(tid("file-input"), str(notes))
    page.click(tid("attachment-remove"))
    assert page.locator(f"{tid('attachments')} {tid('attachment-chip')}").count() == 0
    assert agent_reply(page, send(page, "calculate 1+1")) == "1+1 = 2"
    assert page.locator(tid("files-received")).count() == 0


def test_a_file_over_the_limit_is_refused_before_sending(open_docs, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (3 * 1048576 // 2))
    page = open_docs()
    page.set_input_files(tid("file-input"), str(big))
    message = f"File too large: big.bin (1.5MB, max: {MAX_FILE_SIZE_MB}MB). Increase max_file_size in host.yaml"
    assert page.locator(tid("attachment-warning")).inner_text() == message
    send(page, "read the file")
    assert message in page.locator(tid("error")).inner_text()
    assert page.locator(tid("message-user")).count() == 0
    assert page.input_value(tid("prompt-input")) == "read the file"


def test_reloading_mid_turn_resumes_the_running_turn(open_docs):
    page = open_docs()
    send(page, "count to 12 slowly")
    page.wait_for_selector(f'{tid("tool-card")}[data-status="completed"] >> nth=2')
    shot(page, "mid-turn")
    page.reload()
    page.wait_for_selector(f'{tid("status")}[data-state="running"]')
    assert page.locator(tid("notice"), has_text="Re-attached").count() == 1
    assert page.locator(tid("message-user")).inner_text().strip() == "count to 12 slowly"
    shot(page, "resumed")
    assert agent_reply(page, 0) == "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12"
    tool_ids = page.eval_on_selector_all(tid("tool-card"), "cards => cards.map(c => c.dataset.toolId)")
    assert len(tool_ids) == 12 and len(set(tool_ids)) == 12, tool_ids
    assert page.locator(tid("message-user")).count() == 1
    wait_ready(page)


def test_reloading_after_the_turn_shows_the_conversation(open_docs):
    page = open_docs()
    assert agent_reply(page, send(page, "my name is Grace")) == "Nice to meet you, Grace!"
    wait_ready(page)
    page.reload()
    wait_ready(page)
    assert page.locator(tid("message-agent")).inner_text().strip().startswith("Nice to meet you, Grace!")
    assert agent_reply(page, send(page, "what is my name")) == "Your name is Grace."


def test_cancel_stops_a_running_turn(open_docs):
    page = open_docs()
    send(page, "count to 40 slowly")
    page.wait_for_selector(tid("tool-card"))
    page.click(tid("cancel-button"))
    wait_ready(page)
    assert page.locator(tid("cancel-button")).is_hidden()
    assert page.locator(tid("tool-card")).count() < 40


def test_new_conversation_starts_a_fresh_session(open_docs):
    page = open_docs()
    agent_reply(page, send(page, "my name is Linus"))
    first = page.locator(tid("session-id")).get_attribute("title")
    page.click(tid("new-button"))
    page.wait_for_function(
        "old => { const s = document.querySelector('[data-testid=session-id]').title; return s && s !== old; }",
        arg=first,
    )
    wait_ready(page)
    assert page.locator(tid("message-user")).count() == 0
    assert agent_reply(page, send(page, "what is my name")) == "You haven't told me your name yet."


def test_untrusted_text_is_shown_as_text(open_docs):
    payload = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    page = open_docs()
    answer = agent_reply(page, send(page, payload))
    assert payload in answer
    assert page.locator(tid("message-user")).inner_text().strip() == payload
    assert page.locator(f"{tid('transcript')} img, {tid('transcript')} script").count() == 0


def test_the_http_panel_continues_the_chat_session(open_docs):
    page = open_docs()
    agent_reply(page, send(page, "my name is Ada"))
    wait_ready(page)
    page.click(f"{tid('http-panel')} > summary")
    page.fill(tid("http-prompt"), "what is my name")
    page.click(tid("http-send"))
    page.wait_for_function("() => document.querySelector('[data-testid=http-response]').textContent.length > 0")
    reply = json.loads(page.locator(tid("http-response")).inner_text())
    assert reply["result"] == "Your name is Ada."
    assert reply["session_id"] == page.locator(tid("session-id")).get_attribute("title")
    assert "curl -X POST" in page.locator(tid("http-curl")).inner_text()
    assert agent_reply(page, 1) == "Your name is Ada."
    assert page.locator(".via").last.inner_text() == "via POST /input"
    # The page's socket follows the session, so the HTTP turn also streams to it live: the prompt and the
    # answer are shown once each, however the page hears of them (and after the session panel's refresh).
    page.wait_for_selector(f'{tid("session-status")}[data-state="done"]', timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)
    assert _bubbles(page, "bubble-user", "what is my name") == 1
    assert _bubbles(page, "bubble-agent", "Your name is Ada.") == 1


def test_a_turn_sent_from_another_tab_shows_its_prompt_once(open_docs, browser):
    """A second tab resumes the same conversation and sends a prompt: the first tab follows that turn
    (``user_message``, then the turn's own ``user_input``) and draws the prompt once, as another viewer's."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        first = open_docs(context=context)
        agent_reply(first, send(first, "my name is Ada"))
        wait_ready(first)
        second = open_docs(context=context)
        agent_reply(second, send(second, "what is my name"))
        assert agent_reply(first, 1) == "Your name is Ada."
        wait_ready(first)
        first.wait_for_timeout(500)
        assert _bubbles(first, "bubble-user", "what is my name") == 1
        assert first.locator(".bubble-user .via").last.inner_text() == "from another viewer"
        assert _bubbles(second, "bubble-user", "what is my name") == 1
    finally:
        context.close()


class HeldFrames:
    """The page's /ws with the server's frames held back from the first ``user_message`` on (a turn another
    client started: here the HTTP panel's), until ``release`` lets them through, up to a frame type or all."""

    def __init__(self, context):
        self.held: list[str] = []
        self.page_side = None
        context.route_web_socket("**/ws", self._route)

    def _route(self, ws):
        server = ws.connect_to_server()
        self.page_side = ws
        server.on_message(self._from_server)

    def _from_server(self, message):
        if self.held or json.loads(message).get("type") == "user_message":
            self.held.append(message)
        else:
            self.page_side.send(message)

    def release(self, through: str | None = None) -> None:
        while self.held:
            message = self.held.pop(0)
            self.page_side.send(message)
            if json.loads(message).get("type") == through:
                return


@pytest.mark.parametrize("order", ["reply first", "reply mid-stream", "stream first"])
def test_the_http_panels_turn_is_shown_once_whichever_comes_first(open_docs, browser, order):
    """The reply to the HTTP panel's POST /input and the page's live stream of that turn race: the prompt and
    the answer are drawn once, labelled, in each order, and the page is ready again after."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        frames = HeldFrames(context)
        held_reply = []
        context.route("**/input", lambda route: held_reply.append((route, route.fetch())))
        page = open_docs(context=context)
        agent_reply(page, send(page, "my name is Ada"))
        wait_ready(page)
        page.click(f"{tid('http-panel')} > summary")
        page.fill(tid("http-prompt"), "what is my name")
        page.click(tid("http-send"))
        _wait(page, lambda: held_reply and frames.held and json.loads(frames.held[-1])["type"] == "OUTPUT")
        route, response = held_reply[0]
        if order == "stream first":
            frames.release()
            page.locator(tid("message-agent")).nth(1).wait_for()
        elif order == "reply mid-stream":
            frames.release(through="thinking")
            page.locator(tid("event-thinking")).nth(1).wait_for()
        route.fulfill(response=response)
        page.wait_for_function("() => document.querySelector('[data-testid=http-response]').textContent.length > 0")
        frames.release()
        wait_ready(page)
        page.wait_for_timeout(500)
        assert _bubbles(page, "bubble-user", "what is my name") == 1
        assert _bubbles(page, "bubble-agent", "Your name is Ada.") == 1
        assert page.locator(".bubble-agent .via").last.inner_text() == "via POST /input"
        assert page.locator(".bubble-user .via").last.inner_text() == "via POST /input"
    finally:
        context.close()


def _wait(page, condition, timeout: float = TIMEOUT_MS / 1000) -> None:
    """Poll ``condition`` (test-side state) while the page's handlers run, up to ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


def _bubbles(page, kind: str, text: str) -> int:
    """How many chat bubbles of ``kind`` (bubble-user, bubble-agent) read exactly ``text``."""
    return sum(1 for shown in page.locator(f".{kind} .message-text").all_inner_texts() if shown == text)


def test_the_session_panel_shows_the_stored_record(open_docs):
    page = open_docs()
    agent_reply(page, send(page, "calculate 6*7"))
    page.wait_for_selector(f'{tid("session-status")}[data-state="done"]', timeout=TIMEOUT_MS)
    assert "42" in page.locator(tid("session-json")).inner_text()


def test_the_header_shows_the_agent(open_docs, docs_host):
    import httpx

    info = httpx.get(f"{docs_host}/info").json()
    page = open_docs()
    assert page.locator(tid("agent-name")).inner_text() == info["name"]
    assert page.locator(tid("agent-address")).get_attribute("title") == info["address"]
    assert page.locator(tid("agent-trust")).inner_text() == info["trust"]
    tools = page.locator(f"{tid('agent-tools')} li").all_inner_texts()
    assert tools == info["tools"]
    page.wait_for_selector(f'{tid("health")}[data-state="healthy"]')
    assert re.fullmatch(rf"≤ \d+ files, {MAX_FILE_SIZE_MB} MB each", page.locator(tid("limits")).inner_text())


def test_phone_width_has_no_sideways_scrolling(open_docs):
    page = open_docs(viewport=(360, 740))
    answer = send(page, "save a note: a very long note " + "x" * 200)
    page.wait_for_selector(tid("approval-approve"))
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    shot(page, "phone")
    page.click(tid("approval-approve"))
    agent_reply(page, answer)


def test_dark_mode_follows_the_system(open_docs):
    page = open_docs(color_scheme="dark")
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background != "rgb(246, 247, 249)"
    shot(page, "dark")


def test_the_api_page_lists_curl_examples(open_docs):
    page = open_docs(path="/docs/api")
    page.wait_for_selector(tid("endpoint"))
    paths = page.eval_on_selector_all(
        tid("endpoint"), "nodes => nodes.map(n => n.dataset.method + ' ' + n.dataset.path)"
    )
    assert "POST /input" in paths and "GET /health" in paths and "WS /ws" in paths
    curl = page.locator(f'[data-testid="endpoint"][data-path="/input"] {tid("curl")}').first.inner_text()
    assert curl.startswith("curl -X POST") and "/input" in curl
    health = page.locator('[data-testid="endpoint"][data-method="GET"][data-path="/health"]')
    health.locator(tid("try-button")).click()
    health.locator(tid("try-output")).wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-path=\"/health\"] [data-testid=try-output]').textContent.includes('healthy')"
    )
    shot(page, "api")


def test_a_second_tab_follows_the_running_turn(open_docs):
    first = open_docs()
    answer = send(first, "save a note: shared")
    first.wait_for_selector(tid("approval-approve"))
    second = open_docs(context=first.context, ready=False)  # same browser profile: same saved session
    second.wait_for_selector(f'{tid("approval-card")}[data-state="waiting"]')
    assert second.locator(tid("message-user")).count() == 1
    first.click(tid("approval-approve"))
    assert agent_reply(first, answer) == "Done: note saved: shared."
    assert agent_reply(second, answer) == "Done: note saved: shared."
    assert second.locator(tid("approval-card")).get_attribute("data-state") != "waiting"
    assert second.locator(tid("approval-approve")).is_hidden()


def test_a_browser_key_lets_the_page_chat_at_strict(open_docs, strict_host):
    page = open_docs(base=strict_host, ready=False)
    page.wait_for_selector(tid("error"))
    assert "unauthorized: signed request required" in page.locator(tid("error")).inner_text()
    page.click(f"{tid('identity-panel')} > summary")
    page.click(tid("identity-generate"))
    wait_ready(page)
    assert agent_reply(page, send(page, "my name is Ada")) == "Nice to meet you, Ada!"
    wait_ready(page)
    page.reload()
    wait_ready(page)  # the signed ATTACH resumed the conversation this key owns
    assert agent_reply(page, send(page, "what is my name")) == "Your name is Ada."
    page.click(f"{tid('http-panel')} > summary")
    page.fill(tid("http-prompt"), "what is my name")
    page.click(tid("http-send"))
    page.wait_for_function("() => document.querySelector('[data-testid=http-response]').textContent.length > 0")
    body = json.loads(page.locator(tid("http-response")).inner_text())
    assert body["result"] == "Your name is Ada."
    assert body["session"]["requester"]["address"] == page.locator(f"{tid('identity-status')} code").get_attribute(
        "title"
    )
