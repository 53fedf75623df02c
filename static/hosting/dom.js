// Small DOM and formatting helpers shared by the /docs pages.
// Every untrusted string reaches the page through textContent (HARDENING G9): `el` never parses HTML.

/**
 * Build an element. `attrs` keys: `class`, `text` (set as textContent), `testid` (data-testid),
 * `dataset` (object), `on` (object of event listeners), `hidden`, any other key → setAttribute.
 * Children may be strings (become text nodes), nodes, or null/false (skipped).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "testid") node.dataset.testid = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else if (key === "hidden") node.hidden = true;
    else if (key.startsWith("on")) throw new Error(`inline handler attribute refused: ${key}`);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** JSON for display: pretty, never throws, strings shown as themselves. */
export function prettyJson(value) {
  if (typeof value === "string") return value;
  if (value === undefined) return "";
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** One-line preview of a value, cut to `max` characters. */
export function preview(value, max = 80) {
  let text;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  text = (text ?? "").replace(/\s+/g, " ");
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function shortAddress(address) {
  if (typeof address !== "string" || address.length < 14) return address || "";
  return `${address.slice(0, 6)}…${address.slice(-4)}`;
}

export function formatMs(ms) {
  const n = Number(ms);
  if (!Number.isFinite(n)) return "";
  if (n < 1000) return `${Math.round(n)} ms`;
  return `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
}

export function formatUptime(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  const h = Math.floor(s / 3600);
  return h < 48 ? `${h}h ${Math.floor((s % 3600) / 60)}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** A random id that also works outside secure contexts (plain http on a LAN address). */
export function randomId() {
  if (globalThis.crypto?.randomUUID && globalThis.isSecureContext) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Copy text to the clipboard; falls back to a hidden textarea where the async API is unavailable. */
export async function copyText(text) {
  if (navigator.clipboard && globalThis.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Permission refused (e.g. headless): try the legacy path below.
    }
  }
  const area = el("textarea", { class: "visually-hidden", "aria-hidden": "true", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

/** A button that copies `getText()` and briefly says so. */
export function copyButton(getText, { label = "Copy", testid = null, title = "Copy to clipboard" } = {}) {
  const button = el("button", { type: "button", class: "btn btn-small btn-ghost", title, "aria-label": title, testid, text: label });
  button.addEventListener("click", async () => {
    const ok = await copyText(getText());
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.textContent = label;
    }, 1200);
  });
  return button;
}

/** A code block with a copy button in its corner. */
export function codeBox(text, { testid = null, label = "Copy" } = {}) {
  const pre = el("pre", { class: "code", testid, text });
  return el("div", { class: "codebox" }, pre, copyButton(() => pre.textContent, { label, title: "Copy to clipboard" }));
}

/**
 * fetch() a JSON endpoint of our own host. Never throws: returns
 * {ok, status, statusText, body (parsed JSON or text), ms, error}.
 */
export async function fetchJson(path, options = {}) {
  const started = performance.now();
  try {
    const response = await fetch(path, { cache: "no-store", ...options });
    const text = await response.text();
    let body = text;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: keep the text as is.
    }
    return { ok: response.ok, status: response.status, statusText: response.statusText, body,
      ms: performance.now() - started, error: null };
  } catch (error) {
    return { ok: false, status: 0, statusText: "", body: null, ms: performance.now() - started,
      error: error?.message || String(error) };
  }
}

/** Read the Django `json_script` block with this id; null when absent or broken. */
export function readJsonScript(id) {
  const node = document.getElementById(id);
  if (!node) return null;
  try {
    return JSON.parse(node.textContent);
  } catch {
    return null;
  }
}
