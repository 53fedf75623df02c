// The conversation view: user and agent messages plus the live event stream of a turn (PROTOCOL §4.7),
// and the history list (`chat_items`, §5.4). Everything the host or the user wrote is set as text.
import { clear, el, formatMs, prettyJson, preview } from "./dom.js";

const SETTLED = "No longer waiting for an answer.";
const SAFE_IMAGE = /^data:image\/(png|jpeg|gif|webp|bmp);base64,[A-Za-z0-9+/=\s]+$/;

function jsonText(value) {
  if (typeof value === "string") {
    const trimmed = value.trim();
    if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
      try {
        return JSON.stringify(JSON.parse(trimmed), null, 2);
      } catch {
        // Not JSON after all: show it as written.
      }
    }
    return value;
  }
  return prettyJson(value);
}

function timeTitle(ts) {
  const n = Number(ts);
  return Number.isFinite(n) && n > 0 ? new Date(n * 1000).toLocaleTimeString() : null;
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .filter((part) => part && (part.type === "text" || typeof part.text === "string"))
      .map((part) => part.text)
      .join("\n");
  }
  return content == null ? "" : prettyJson(content);
}

/** The rendering list for a session: its `chat_items` if the host sent them, else one from `messages`. */
export function historyItems(session, chatItems) {
  if (Array.isArray(chatItems)) return chatItems;
  const items = [];
  for (const message of session?.messages || []) {
    if (message?.role === "user") items.push({ type: "user", content: textOf(message.content) });
    else if (message?.role === "assistant" && textOf(message.content)) {
      items.push({ type: "agent", content: textOf(message.content) });
    }
  }
  return items;
}

export class Transcript {
  /**
   * @param list   the <ol> that holds the conversation
   * @param onAnswer(frame, summary) sends an ASK_USER_RESPONSE / APPROVAL_RESPONSE; false when it could not
   * @param onRuntimeInput(event) the agent read a message sent during its turn (a user_input marked runtime_input)
   */
  constructor(list, { onAnswer, onRuntimeInput = () => {} }) {
    this.list = list;
    this.onAnswer = onAnswer;
    this.onRuntimeInput = onRuntimeInput;
    this.reset();
  }

  reset() {
    clear(this.list);
    this.seen = new Set();
    this.tools = new Map(); // tool_id → card parts
    this.llmLines = new Map(); // llm_call id → line
    this.openLlm = null; // the last llm_call line still waiting for its llm_result
    this.requests = new Map(); // request id → {card, settle(text)} while it waits
    this.cards = new Map(); // request id → settle(text, state), kept for a late "stale" verdict
    this.pendingUser = null; // a user message sent from this page, waiting for its user_input event
    this.activeThinking = null;
    this.busyLine = null;
  }

  /** While a turn runs, a "working…" line stays last (hidden while a "Thinking…" line is active). */
  setBusy(busy) {
    if (busy && !this.busyLine?.isConnected) {
      this.busyLine = el("li", { class: "item busy", testid: "busy", "aria-hidden": "true" },
        el("span", { class: "spinner" }), el("span", { text: "working…" }));
      this.list.append(this.busyLine);
    } else if (!busy && this.busyLine) {
      this.busyLine.remove();
      this.busyLine = null;
    }
  }

  // ---- plumbing -------------------------------------------------------------------------------------

  add(node) {
    const nearBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 80;
    if (this.busyLine?.isConnected) this.list.insertBefore(node, this.busyLine);
    else this.list.append(node);
    if (nearBottom || node.dataset.testid === "message-user") node.scrollIntoView({ block: "end" });
    return node;
  }

  item(classes, testid, ...children) {
    return this.add(el("li", { class: `item ${classes}`, testid }, ...children));
  }

  /** The model call behind the active "Thinking…" line ended: say how long it took. */
  stopThinking(endTs = null) {
    const line = this.activeThinking;
    if (!line) return;
    this.activeThinking = null;
    line.classList.remove("is-active");
    const started = Number(line.dataset.ts);
    const ended = Number(endTs) || Date.now() / 1000;
    const label = line.querySelector(".thinking-text");
    const seconds = Number.isFinite(started) && started > 0 && ended >= started ? ended - started : null;
    if (label && !line.dataset.content) {
      label.textContent = seconds === null ? "Thought" : `Thought for ${formatMs(seconds * 1000)}`;
      if (seconds !== null && seconds < 0.05) line.classList.add("is-brief");
    }
  }

  // ---- messages --------------------------------------------------------------------------------------

  userMessage(text, { attachments = [], via = null, pending = false } = {}) {
    const node = this.item(
      "item-user",
      "message-user",
      el("div", { class: "bubble bubble-user" },
        via && el("span", { class: "via", text: via }),
        el("p", { class: "message-text", text }),
        attachments.length > 0 && el("ul", { class: "chips", "aria-label": "Attachments" }, attachments)),
    );
    if (pending) this.pendingUser = node;
    return node;
  }

  agentMessage(text, { durationMs = null, via = null } = {}) {
    this.stopThinking();
    return this.item(
      "item-agent",
      "message-agent",
      el("div", { class: "bubble bubble-agent" },
        via && el("span", { class: "via", text: via }),
        el("p", { class: "message-text", text: text ?? "" }),
        durationMs != null && el("span", { class: "meta", text: formatMs(durationMs) })),
    );
  }

  notice(text, kind = "info") {
    return this.item(`notice notice-${kind}`, "notice", el("p", { text }));
  }

  error(message, { code = null } = {}) {
    this.stopThinking();
    return this.item(
      "item-error",
      "error",
      el("p", { role: "alert" }, el("strong", { text: "Error" }), code ? ` (${code})` : "", ": ", message),
    );
  }

  /** Re-draw earlier turns from the rendering list (§5.4). */
  history(items) {
    for (const item of items || []) {
      if (item?.type === "user") this.userMessage(textOf(item.content));
      else if (item?.type === "agent") this.agentMessage(textOf(item.content));
      else if (item?.type === "tool_call") {
        this.toolResult({
          tool_id: item.id, name: item.name, args: item.args, result: item.result, timing_ms: item.timing_ms,
          status: item.status === "error" ? "failed" : "completed",
        });
      } else if (item?.type === "files_received") this.filesReceived(item);
    }
  }

  // ---- events ----------------------------------------------------------------------------------------

  /**
   * Render one turn event. Returns false for a repeat (same type and id: replays after ATTACH, and the
   * events kept across a reload). llm_call and its llm_result share an id (§4.7.2), hence the type.
   */
  event(event) {
    if (event.id != null) {
      const key = `${event.type}:${event.id}`;
      if (this.seen.has(key)) return false;
      this.seen.add(key);
    }
    // A "thinking" line stays active through its model call (llm_call) until the next real step.
    if (!["thinking", "session_sync", "llm_call"].includes(event.type)) this.stopThinking(event.ts);
    switch (event.type) {
      case "user_input": {
        if (event.runtime_input) {
          this.onRuntimeInput(event); // steering, read by the agent mid-turn: not the turn's prompt
          break;
        }
        // One user message per turn, even if the host reports the prompt twice.
        const turnKey = event.turn != null ? `user_input@turn:${event.turn}` : null;
        if (turnKey && this.seen.has(turnKey)) break;
        if (turnKey) this.seen.add(turnKey);
        if (this.pendingUser) this.pendingUser = null;
        else this.userMessage(event.content ?? "");
        break;
      }
      case "user_message":
        // Another client's prompt (PROTOCOL §4.9): the turn's own user_input follows with the same prompt and
        // is taken as this bubble's, as for a prompt sent from this page.
        this.userMessage(event.content ?? "", { via: "from another viewer", pending: true });
        break;
      case "thinking":
        this.thinking(event);
        break;
      case "llm_call":
      case "llm_result":
        this.llmLine(event);
        break;
      case "tool_call":
        this.toolCall(event);
        break;
      case "tool_result":
        this.toolResult(event);
        break;
      case "approval_needed":
        this.approval(event);
        break;
      case "ask_user":
        this.askUser(event);
        break;
      case "files_received":
        this.filesReceived(event);
        break;
      case "agent_image":
        this.agentImage(event);
        break;
      case "plan":
        this.plan(event);
        break;
      case "turn_result":
        if (event.reason && event.reason !== "natural") this.notice(`Turn ended: ${event.reason}`);
        break;
      case "session_sync":
        break;
      default:
        this.generic(event);
    }
    return true;
  }

  thinking(event) {
    this.stopThinking(event.ts);
    const text = event.content ? String(event.content) : "Thinking…";
    const line = this.item("event event-thinking is-active", "event-thinking",
      el("span", { class: "spinner", "aria-hidden": "true" }), el("span", { class: "thinking-text", text }));
    line.dataset.ts = String(event.ts ?? Date.now() / 1000);
    if (event.content) line.dataset.content = "1";
    const title = timeTitle(event.ts);
    if (title) line.title = title;
    this.activeThinking = line;
  }

  llmLine(event) {
    const parts = [event.model, event.iteration != null ? `iteration ${event.iteration}` : null];
    if (event.type === "llm_result") {
      parts.push(formatMs(event.duration_ms));
      if (event.tool_calls_count != null) parts.push(`${event.tool_calls_count} tool call(s)`);
      if (event.status && event.status !== "success") parts.push(event.status);
    }
    const text = `LLM ${event.type === "llm_call" ? "call" : "result"}: ${parts.filter(Boolean).join(" · ")}`;
    // An llm_result shares its llm_call's id (§4.7.2); a host that numbers them apart still answers
    // the latest open call.
    const existing = (event.id != null && this.llmLines.get(event.id)) || (event.type === "llm_result" && this.openLlm);
    this.openLlm = null;
    if (existing) {
      existing.textContent = text;
      existing.dataset.status = event.status || "";
      return;
    }
    const line = el("span", { text });
    line.dataset.status = event.status || "";
    this.item("event event-llm", "event-llm", line);
    if (event.id != null) this.llmLines.set(event.id, line);
    if (event.type === "llm_call") this.openLlm = line;
  }

  toolCard(event) {
    const id = event.tool_id ?? event.id;
    let card = id != null ? this.tools.get(id) : null;
    if (card) return card;
    const status = el("span", { class: "tool-status", text: "running" });
    const summaryPreview = el("span", { class: "tool-preview" });
    const timing = el("span", { class: "tool-timing" });
    const args = el("pre", { class: "code", testid: "tool-args" });
    const result = el("pre", { class: "code", testid: "tool-result", text: "…" });
    const errorBox = el("pre", { class: "code code-error", testid: "tool-error", hidden: true });
    const root = el("details", { class: "tool-card", testid: "tool-card" },
      el("summary", {},
        el("span", { class: "tool-icon", "aria-hidden": "true" }),
        el("span", { class: "tool-name", text: event.name || "tool" }),
        summaryPreview, timing, status),
      el("div", { class: "tool-body" },
        el("h4", { text: "Arguments" }), args,
        el("h4", { text: "Result" }), result, errorBox));
    root.dataset.status = "running";
    if (id != null) root.dataset.toolId = String(id);
    card = { root, status, summaryPreview, timing, args, result, errorBox };
    this.item("item-tool", null, root);
    if (id != null) this.tools.set(id, card);
    return card;
  }

  toolCall(event) {
    const card = this.toolCard(event);
    card.args.textContent = jsonText(event.args ?? {});
    card.summaryPreview.textContent = preview(event.args ?? "", 60);
    card.status.textContent = event.status === "pending" ? "pending" : "running";
  }

  toolResult(event) {
    const card = this.toolCard(event);
    const failed = event.status === "failed" || event.status === "error" || Boolean(event.error);
    if (event.args !== undefined && !card.args.textContent) card.args.textContent = jsonText(event.args);
    card.result.textContent = event.result === undefined || event.result === null ? "(no result)" : jsonText(event.result);
    card.summaryPreview.textContent = `→ ${preview(event.result ?? event.error ?? "", 60)}`;
    card.timing.textContent = event.timing_ms != null ? formatMs(event.timing_ms) : "";
    card.status.textContent = failed ? "failed" : "done";
    card.root.dataset.status = failed ? "failed" : "completed";
    if (event.error) {
      card.errorBox.textContent = jsonText(event.error);
      card.errorBox.hidden = false;
    }
    if (failed) card.root.open = true;
    const approval = this.requests.get(`tool:${event.tool_id}`);
    if (approval) approval.settle();
  }

  filesReceived(event) {
    const files = Array.isArray(event.files) ? event.files : [];
    this.item("event event-files", "files-received",
      el("span", { text: `Files saved (${files.length})` }),
      el("ul", { class: "file-list" },
        // The name only: where the host keeps the file is its own business, not the browser's.
        files.map((file) => el("li", {}, el("code", { text: file?.name ?? "?" })))));
  }

  agentImage(event) {
    const src = typeof event.image === "string" ? event.image : "";
    if (!SAFE_IMAGE.test(src)) {
      this.generic(event);
      return;
    }
    this.item("item-image", "agent-image", el("img", { src, alt: "Image from the agent", class: "agent-image" }));
  }

  plan(event) {
    const entries = Array.isArray(event.entries) ? event.entries : [];
    this.item("event event-plan", "event-plan",
      el("span", { text: "Plan" }),
      el("ul", { class: "plan" },
        entries.map((entry) => el("li", { dataset: { status: String(entry?.status ?? "") } },
          el("span", { class: "plan-status", text: entry?.status ?? "" }), " ", entry?.content ?? ""))));
  }

  generic(event) {
    const { type, id, ts, session_id: _sid, ...rest } = event;
    const line = this.item("event event-generic", "event-generic",
      el("code", { text: String(type ?? "event") }), " ", el("span", { class: "dim", text: preview(rest, 160) }));
    const title = timeTitle(ts);
    if (title) line.title = title;
  }

  // ---- requests that wait for the human (§4.7.3) ----------------------------------------------------

  /** Card chrome shared by approval and ask_user: a body, an outcome line, and a settle function. */
  requestCard(event, kind, title, testid) {
    const outcome = el("p", { class: "request-outcome", testid: `${kind}-outcome`, hidden: true });
    const body = el("div", { class: "request-body" });
    const card = el("section", { class: `request-card request-${kind}`, testid, "aria-label": title },
      el("h3", { text: title }), body, outcome);
    card.dataset.requestId = String(event.id ?? "");
    card.dataset.state = "waiting";
    const settle = (text, state = "answered") => {
      // Once answered, only the host's "stale" verdict may still change the card.
      if (card.dataset.state !== "waiting" && state !== "stale") return;
      card.dataset.state = state;
      for (const control of card.querySelectorAll("button, input, textarea")) control.disabled = true;
      if (text) {
        outcome.textContent = text;
        outcome.hidden = false;
      }
      this.requests.delete(String(event.id));
      if (event.tool_call_id != null) this.requests.delete(`tool:${event.tool_call_id}`);
    };
    if (event.id != null) {
      this.requests.set(String(event.id), { card, settle });
      this.cards.set(String(event.id), settle);
    }
    this.item("item-request", null, card);
    // The caller fills the body (question, buttons) after this returns: bring the whole card into view then,
    // or its buttons sit below the visible transcript.
    requestAnimationFrame(() => card.scrollIntoView({ block: "end", behavior: "instant" }));
    return { card, body, settle };
  }

  /** Send an answer; on success settle the card with `summary`. */
  answer(event, frame, settle, summary) {
    if (!this.onAnswer({ ...frame, request_id: event.id }, summary)) {
      this.error("Not connected: the answer was not sent. It can be sent again once reconnected.");
      return;
    }
    settle(summary);
  }

  approval(event) {
    const tool = event.tool || event.name || "tool";
    const { body, settle } = this.requestCard(event, "approval", `Approval needed: ${tool}`, "approval-card");
    // The arguments are shown once, as JSON below: drop a description's own copy of them ("… with {...}").
    const description = String(event.description ?? "").replace(/\s+with\s+\{.*\}\s*$/s, "");
    if (description) body.append(el("p", { testid: "approval-description", text: description }));
    body.append(el("pre", { class: "code", testid: "approval-args", text: jsonText(event.arguments ?? event.args ?? {}) }));
    if (event.batch_remaining) body.append(el("p", { class: "dim", text: `${event.batch_remaining} more tool call(s) in this batch` }));
    const feedbackId = `feedback-${String(event.id ?? Math.random()).replace(/[^A-Za-z0-9_-]/g, "")}`;
    const feedback = el("textarea", { id: feedbackId, class: "input", rows: 2, testid: "approval-feedback",
      placeholder: "Optional feedback for the agent" });
    const respond = (approved, scope) => {
      const frame = { type: "APPROVAL_RESPONSE", approved, scope };
      if (!approved) frame.mode = "reject_soft";
      if (feedback.value.trim()) frame.feedback = feedback.value.trim();
      const summary = approved ? (scope === "session" ? "Approved for this session" : "Approved once") : "Rejected";
      this.answer(event, frame, settle, summary);
    };
    body.append(
      el("label", { for: feedbackId, class: "label", text: "Feedback (optional)" }), feedback,
      el("div", { class: "actions" },
        el("button", { type: "button", class: "btn btn-primary", testid: "approval-approve", text: "Approve",
          on: { click: () => respond(true, "once") } }),
        el("button", { type: "button", class: "btn", testid: "approval-session", text: "Approve for session",
          on: { click: () => respond(true, "session") } }),
        el("button", { type: "button", class: "btn btn-danger", testid: "approval-reject", text: "Reject",
          on: { click: () => respond(false, "once") } })));
    if (event.tool_call_id != null) {
      this.requests.set(`tool:${event.tool_call_id}`, { settle: () => settle(SETTLED, "settled") });
    }
  }

  askUser(event) {
    const { body, settle } = this.requestCard(event, "ask", "The agent asks", "ask-user-card");
    body.append(el("p", { class: "question", testid: "ask-user-question", text: String(event.question ?? "") }));
    const send = (answer, summary) => this.answer(event, { type: "ASK_USER_RESPONSE", answer }, settle, `Answered: ${summary}`);
    const options = Array.isArray(event.options) ? event.options.map((option) => String(option)) : [];
    if (Array.isArray(event.fields) && event.fields.length > 0) {
      this.askForm(event, body, send);
      return;
    }
    if (options.length > 0 && event.multi_select) {
      const boxes = options.map((option) => el("input", { type: "checkbox", value: option, testid: "ask-user-option" }));
      body.append(
        el("div", { class: "options", role: "group", "aria-label": "Choose any" },
          boxes.map((box, i) => el("label", { class: "option-check" }, box, options[i]))),
        el("div", { class: "actions" },
          el("button", { type: "button", class: "btn btn-primary", testid: "ask-user-send", text: "Send choices",
            on: { click: () => {
              const chosen = boxes.filter((box) => box.checked).map((box) => box.value);
              send(chosen, chosen.join(", ") || "(none)");
            } } })));
      return;
    }
    if (options.length > 0) {
      body.append(el("div", { class: "options", role: "group", "aria-label": "Choose one" },
        options.map((option) => el("button", { type: "button", class: "btn", testid: "ask-user-option", text: option,
          on: { click: () => send(option, option) } }))));
    }
    const inputId = `ask-${String(event.id ?? Math.random()).replace(/[^A-Za-z0-9_-]/g, "")}`;
    const input = el("input", { id: inputId, class: "input", type: "text", testid: "ask-user-input",
      placeholder: options.length ? "Or type another answer" : "Your answer", autocomplete: "off" });
    const submit = () => {
      if (!input.value.trim()) return input.focus();
      send(input.value, input.value);
    };
    input.addEventListener("keydown", (keyEvent) => {
      if (keyEvent.key === "Enter" && !keyEvent.isComposing) {
        keyEvent.preventDefault();
        submit();
      }
    });
    body.append(el("label", { for: inputId, class: "visually-hidden", text: "Answer" }),
      el("div", { class: "inline-form" }, input,
        el("button", { type: "button", class: "btn btn-primary", testid: "ask-user-send", text: "Send", on: { click: submit } })));
    queueMicrotask(() => input.focus({ preventScroll: true }));
  }

  /** ask_user with `fields`: one labelled input per field; the answer is an object keyed by field name. */
  askForm(event, body, send) {
    const inputs = event.fields.map((field, index) => {
      const name = String(field?.name ?? field?.id ?? `field${index}`);
      const id = `ask-${index}-${String(event.id ?? "").replace(/[^A-Za-z0-9_-]/g, "")}`;
      const input = el("input", { id, class: "input", type: "text", testid: "ask-user-input", name });
      return { name, label: String(field?.label ?? field?.question ?? name), input, id };
    });
    body.append(...inputs.map(({ label, input, id }) => el("div", { class: "field" }, el("label", { for: id, class: "label", text: label }), input)));
    body.append(el("div", { class: "actions" },
      el("button", { type: "button", class: "btn btn-primary", testid: "ask-user-send", text: "Send",
        on: { click: () => {
          const answer = Object.fromEntries(inputs.map(({ name, input }) => [name, input.value]));
          send(answer, preview(answer, 60));
        } } })));
  }

  /** Settle a request by id: answered earlier (kept across reloads), or refused as stale by the host. */
  settleRequest(requestId, text, state = "answered") {
    const settle = this.cards.get(String(requestId));
    if (settle) settle(text, state);
    return Boolean(settle);
  }

  /** The turn moved on or ended: nothing is waiting any more. */
  settleAll(text = SETTLED) {
    for (const [key, request] of [...this.requests]) {
      if (!key.startsWith("tool:")) request.settle(text, "settled");
    }
    this.requests.clear();
  }

  get waiting() {
    return [...this.requests.keys()].some((key) => !key.startsWith("tool:"));
  }
}
