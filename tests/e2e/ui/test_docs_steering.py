"""/docs while the agent works (issue 17.7b): the composer stays open, a message sent then steers the running
turn (runtime input) and is shown as steering; a turn that takes none says so and gives the text back. In
Debian's chromium; screenshots go to tests/artifacts/ (docs-steer-*.png)."""

from __future__ import annotations

import pytest

from tests.e2e.ui import test_docs_browser as base

ARTIFACTS, agent_reply, send, tid, wait_ready = (base.ARTIFACTS, base.agent_reply, base.send, base.tid, base.wait_ready)
browser, docs_host, open_docs = base.browser, base.docs_host, base.open_docs

pytestmark = pytest.mark.browser


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"docs-steer-{name}.png"), full_page=False)


def test_typing_while_the_agent_works_steers_the_running_turn(open_docs):
    page = open_docs()
    answer = send(page, "count slowly until I say stop")
    page.wait_for_selector(tid("tool-card"))
    assert page.locator(tid("status")).get_attribute("data-state") == "running"
    assert page.locator(tid("send-button")).is_enabled()
    assert page.locator(tid("send-button")).inner_text() == "Steer"
    send(page, "count by 10")
    page.wait_for_selector(f'{tid("message-steer")}[data-state="read"]')
    steer = page.locator(tid("message-steer")).first
    assert steer.locator(".message-text").inner_text() == "count by 10"
    assert steer.locator(tid("steer-state")).inner_text() == "steering · read by the agent"
    assert page.input_value(tid("prompt-input")) == ""
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=tool-card] .tool-args, "
        "[data-testid=tool-card]')].some(n => /\\+10/.test(n.textContent))"
    )
    shot(page, "running")
    send(page, "stop")
    reply = agent_reply(page, answer)
    assert reply.endswith("Stopped because you said 'stop'."), reply
    assert page.locator(tid("message-steer")).count() == 2 and page.locator(tid("message-user")).count() == 1
    assert page.locator(tid("error")).count() == 0
    wait_ready(page)
    assert page.locator(tid("send-button")).inner_text() == "Send"
    shot(page, "done")


def test_a_turn_that_takes_no_runtime_input_says_so_and_gives_the_text_back(open_docs):
    page = open_docs()
    answer = send(page, "quiz me")
    page.wait_for_selector(tid("ask-user-question"))
    send(page, "is it Paris?")
    page.wait_for_selector(f'{tid("message-steer")}[data-state="rejected"]')
    notice = page.locator(tid("notice")).last.inner_text()
    assert notice == "The agent does not take messages while it works: send it again after it answers.", notice
    assert page.input_value(tid("prompt-input")) == "is it Paris?"
    assert page.locator(tid("error")).count() == 0
    assert page.locator(tid("status")).get_attribute("data-state") == "waiting"
    shot(page, "rejected")
    page.locator(tid("ask-user-option"), has_text="Paris").click()
    assert agent_reply(page, answer) == "Correct!"


def test_the_api_page_documents_runtime_input(open_docs):
    page = open_docs(path="/docs/api")
    page.wait_for_selector(tid("ws-subscribe"))
    assert "RUNTIME_INPUT_ACK" in page.locator(tid("ws-subscribe")).inner_text()
    assert "steer it (runtime input)" in page.locator(tid("ws-publish")).inner_text()
    text = page.locator(tid("ws-runtime-input")).inner_text()
    assert "RUNTIME_INPUT_REJECTED" in text and "count slowly until I say stop" in text, text
    page.locator(tid("ws-runtime-input")).scroll_into_view_if_needed()
    shot(page, "api")
