// The parts of /docs around the chat: the agent header (from /info, with a /health dot), the "Session"
// panel polling GET /sessions/{id}, and the "HTTP" panel sending POST /input (PROTOCOL §3).
import { byTestId, clear, copyButton, copyText, el, fetchJson, formatMs, formatUptime, prettyJson, shortAddress } from "./dom.js";
import { BrowserIdentity, canSign } from "./signing.js";

const HEALTH_EVERY_MS = 15000;

/** Shell-quote for a POSIX shell: single quotes, with embedded ones closed and escaped. */
export function shellQuote(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

export function curlFor(method, url, body = null) {
  const parts = [method === "GET" ? `curl ${shellQuote(url)}` : `curl -X ${method} ${shellQuote(url)}`];
  if (body !== null) {
    parts.push(`-H 'Content-Type: application/json'`);
    parts.push(`-d ${shellQuote(JSON.stringify(body))}`);
  }
  return parts.join(" \\\n  ");
}

export class Header {
  constructor(agent) {
    this.agent = agent || {};
    this.address = byTestId("agent-address");
    this.healthDot = byTestId("health");
    const copy = byTestId("copy-address");
    copy.addEventListener("click", async () => {
      const ok = await copyText(this.agent.address || "");
      copy.textContent = ok ? "Copied" : "Copy failed";
      setTimeout(() => {
        copy.textContent = "Copy";
      }, 1200);
    });
    this.apply(this.agent);
  }

  /** Show /info (or the template's context): name, address, model, trust, version, tools. */
  apply(info) {
    this.agent = { ...this.agent, ...info };
    const { name, address, model, trust, version, tools } = this.agent;
    const setText = (testid, value) => {
      const node = byTestId(testid);
      if (node && value != null && value !== "") node.textContent = String(value);
    };
    setText("agent-name", name);
    setText("agent-model", model);
    setText("agent-trust", trust);
    setText("agent-version", version);
    this.address.textContent = address ? shortAddress(address) : "no address";
    this.address.title = address || "";
    const list = byTestId("agent-tools");
    if (list && Array.isArray(tools)) {
      clear(list);
      if (tools.length === 0) list.append(el("li", { class: "dim", text: "none" }));
      for (const tool of tools) list.append(el("li", { text: typeof tool === "string" ? tool : tool?.name ?? "?" }));
    }
  }

  startHealth() {
    const check = async () => {
      const reply = await fetchJson("/health");
      const healthy = reply.ok && reply.body?.status === "healthy";
      const state = healthy ? "healthy" : reply.status === 0 ? "down" : "unhealthy";
      this.healthDot.dataset.state = state;
      const detail = healthy
        ? `healthy · up ${formatUptime(reply.body.uptime)}`
        : reply.status === 0 ? "unreachable" : `HTTP ${reply.status}`;
      this.healthDot.title = `/health: ${detail}`;
      this.healthDot.setAttribute("aria-label", `Health: ${detail}`);
    };
    check();
    setInterval(check, HEALTH_EVERY_MS);
  }
}

/**
 * The Session panel: polls GET /sessions/{id} while open, every 2 s during a turn and every 10 s otherwise.
 * The `session` object inside the record can be large, so it is summarised unless asked for.
 */
export class SessionPanel {
  constructor({ getSessionId, isRunning, signHeaders = async () => ({}) }) {
    this.getSessionId = getSessionId;
    this.isRunning = isRunning;
    this.signHeaders = signHeaders;
    this.root = byTestId("session-panel");
    this.status = byTestId("session-status");
    this.line = byTestId("session-poll");
    this.json = byTestId("session-json");
    this.full = byTestId("session-full");
    this.timer = null;
    this.last = null;
    this.full.addEventListener("change", () => this.show());
    this.root.addEventListener("toggle", () => this.schedule(0));
  }

  schedule(delay = null) {
    clearTimeout(this.timer);
    const wait = delay ?? (this.isRunning() ? 2000 : 10000);
    this.timer = setTimeout(() => this.poll(), wait);
  }

  async poll() {
    const id = this.getSessionId();
    if (!this.root.open || !id || document.hidden) {
      if (!id) this.reset();
      this.schedule();
      return;
    }
    const path = `/sessions/${encodeURIComponent(id)}`;
    const reply = await fetchJson(path, { headers: await this.signHeaders("GET", path) });
    if (id !== this.getSessionId()) return this.schedule(0);
    this.last = reply;
    this.show();
    this.schedule();
  }

  reset() {
    this.last = null;
    this.status.textContent = "—";
    this.status.dataset.state = "";
    this.line.textContent = "no session yet";
    this.json.textContent = "";
  }

  show() {
    const reply = this.last;
    if (!reply) return;
    const when = new Date().toLocaleTimeString();
    if (reply.status === 0) {
      this.status.textContent = "offline";
      this.line.textContent = `${when} · ${reply.error}`;
      return;
    }
    const record = reply.body && typeof reply.body === "object" ? reply.body : { body: reply.body };
    if (reply.status === 404) {
      // A new conversation has an id before its first turn is stored: nothing is wrong, there is nothing yet.
      this.status.textContent = "—";
      this.status.dataset.state = "";
      this.line.textContent = "nothing stored yet: send a message";
      this.json.textContent = "";
      return;
    }
    const state = reply.ok ? String(record.status ?? "?") : `HTTP ${reply.status}`;
    this.status.textContent = state;
    this.status.dataset.state = reply.ok ? String(record.status ?? "") : "error";
    this.line.textContent = `${when} · HTTP ${reply.status}${this.isRunning() ? " · every 2 s" : " · every 10 s"}`;
    let shown = record;
    if (!this.full.checked && record.session && typeof record.session === "object") {
      const s = record.session;
      const messages = Array.isArray(s.messages) ? s.messages.length : 0;
      shown = { ...record, session: `{…turn ${s.turn ?? "?"}, ${messages} messages}` };
    }
    this.json.textContent = prettyJson(shown);
  }
}

/**
 * The HTTP panel: POST /input with the chat's session (or none), raw JSON reply, and the same as curl.
 * `onSend(body)` runs just before the request goes, `onResult(body, reply)` after a successful reply.
 */
export class HttpPanel {
  constructor({ getSession, onSend = () => {}, onResult, signBody = async (body) => body }) {
    this.getSession = getSession;
    this.onSend = onSend;
    this.onResult = onResult;
    this.signBody = signBody;
    this.prompt = byTestId("http-prompt");
    this.keep = byTestId("http-continue");
    this.button = byTestId("http-send");
    this.statusLine = byTestId("http-status");
    this.response = byTestId("http-response");
    this.curl = byTestId("http-curl");
    this.curl.after(el("div", { class: "actions" }, copyButton(() => this.curl.textContent, { label: "Copy curl" })));
    this.button.addEventListener("click", () => this.send());
    this.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) this.send();
    });
    this.prompt.addEventListener("input", () => this.updateCurl());
    this.keep.addEventListener("change", () => this.updateCurl());
    this.updateCurl();
  }

  body() {
    const body = { prompt: this.prompt.value };
    const session = this.keep.checked ? this.getSession() : null;
    if (session) body.session = session;
    return body;
  }

  updateCurl() {
    const body = this.body();
    if (body.session && JSON.stringify(body.session).length > 2000) body.session = { session_id: body.session.session_id, "…": "…" };
    this.curl.textContent = curlFor("POST", `${location.origin}/input`, body);
  }

  async send() {
    if (!this.prompt.value.trim()) {
      this.statusLine.textContent = "Type a prompt first.";
      this.prompt.focus();
      return;
    }
    const body = this.body();
    this.button.disabled = true;
    this.statusLine.textContent = "waiting…";
    this.response.textContent = "";
    let wire;
    try {
      wire = await this.signBody(body);
    } catch (error) {
      this.button.disabled = false;
      this.statusLine.textContent = `could not sign: ${error?.message || error}`;
      return;
    }
    this.curl.textContent = curlFor("POST", `${location.origin}/input`, wire);
    this.onSend(body);
    const reply = await fetchJson("/input", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(wire),
    });
    this.button.disabled = false;
    this.statusLine.textContent = reply.status === 0
      ? `failed: ${reply.error}`
      : `HTTP ${reply.status} ${reply.statusText} · ${formatMs(reply.ms)}`;
    this.response.textContent = prettyJson(reply.body);
    if (reply.ok && reply.body && typeof reply.body === "object") this.onResult(body, reply.body);
  }
}

/**
 * The Identity panel: generate or paste an Ed25519 key kept in this browser, or forget it. `onChange`
 * receives the new BrowserIdentity (or null) after every change.
 */
export class IdentityPanel {
  constructor({ identity, onChange }) {
    this.identity = identity;
    this.onChange = onChange;
    this.status = byTestId("identity-status");
    this.generate = byTestId("identity-generate");
    this.forget = byTestId("identity-forget");
    this.keyInput = byTestId("identity-key");
    this.use = byTestId("identity-use");
    if (!canSign()) {
      this.status.textContent = "This browser cannot sign here (WebCrypto needs https or localhost).";
      for (const control of [this.generate, this.keyInput, this.use]) control.disabled = true;
      return;
    }
    this.generate.addEventListener("click", () => this.replace(() => BrowserIdentity.generate()));
    byTestId("identity-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.replace(() => BrowserIdentity.fromHex(this.keyInput.value));
    });
    this.forget.addEventListener("click", () => {
      BrowserIdentity.forget();
      this.set(null);
    });
    this.show();
  }

  async replace(make) {
    try {
      const identity = await make();
      identity.save();
      this.keyInput.value = "";
      this.set(identity);
    } catch (error) {
      const unsupported = error?.name === "NotSupportedError";
      this.status.textContent = unsupported
        ? "This browser has no Ed25519 in WebCrypto: requests stay unsigned."
        : `Not a usable key: ${error?.message || error}`;
    }
  }

  set(identity) {
    this.identity = identity;
    this.show();
    this.onChange(identity);
  }

  show() {
    const { identity } = this;
    clear(this.status);
    if (identity) {
      this.status.append("Signing as ", el("code", { title: identity.address, text: shortAddress(identity.address) }), " ",
        copyButton(() => identity.address, { label: "Copy address" }));
    } else {
      this.status.append("Unsigned: requests are anonymous.");
    }
    this.forget.hidden = !identity;
  }
}
