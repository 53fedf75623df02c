// /docs: chat with the hosted agent over /ws (PROTOCOL §4), watch a turn's events live, answer its
// questions and approvals, attach files, and resume the conversation after a reload (§4.4, §4.9).
import { Connection, wsUrl } from "./connection.js";
import { byTestId, el, fetchJson, randomId, readJsonScript } from "./dom.js";
import { Header, HttpPanel, IdentityPanel, SessionPanel } from "./panels.js";
import { BrowserIdentity } from "./signing.js";
import { SavedConversation } from "./state.js";
import { REJECTED, Steering } from "./steering.js";
import { Transcript, historyItems } from "./transcript.js";
import { AttachmentTray, attachmentChip, limitsFrom } from "./uploads.js";

// Events after which nothing can still be waiting for the human (§4.7.3: the turn blocks while it waits).
const PROGRESS = new Set(["thinking", "llm_call", "llm_result", "tool_call", "tool_result", "turn_result", "files_received"]);
// Errors that leave a running turn running.
const isNonTerminalError = (frame) =>
  frame.code === "STALE_ANSWER" ||
  frame.code === REJECTED ||
  frame.reason === "request_id_required" ||
  /already has a running agent/.test(String(frame.message ?? ""));
const RAW_LINES = 300;

const agent = readJsonScript("agent-data") || {};
const saved = new SavedConversation(agent.address);
const ui = {
  status: byTestId("status"),
  sessionTag: byTestId("session-id"),
  prompt: byTestId("prompt-input"),
  send: byTestId("send-button"),
  cancel: byTestId("cancel-button"),
  newButton: byTestId("new-button"),
  fileInput: byTestId("file-input"),
  attach: byTestId("attach-button"),
  form: byTestId("composer"),
  chat: byTestId("chat"),
  transcript: byTestId("transcript"),
  limits: byTestId("limits"),
  showLlm: byTestId("show-llm"),
  showRaw: byTestId("show-raw"),
  raw: byTestId("raw-frames"),
};

let limits = limitsFrom(agent.accepted_inputs);
let running = false;
let authenticated = false;
let handshakeKind = null;
let attachFailed = false;
let refusal = null; // the host's reason for refusing the last handshake (shown once, not once per retry)
let preparing = false;
let sessionPanel = null;
let identity = null; // a BrowserIdentity when the user chose to sign (PROTOCOL §2)
const seenOutputs = new Set();
// A POST /input sent from the HTTP panel on the chat's session runs a turn that this page's socket also follows
// (§4.9: `user_message`, then the turn's events and its OUTPUT). The reply and that stream race: whichever comes
// first shows the turn, once. {prompt, userShown: its bubble is drawn, turn: its number once the reply drew it,
// replaying: the stream is going over a turn the reply already drew}
let httpTurn = null;
const VIA_HTTP = "via POST /input";

const header = new Header(agent);
const transcript = new Transcript(ui.transcript, {
  onAnswer: sendAnswer,
  onRuntimeInput: (event) => steering.read(event),
});
const steering = new Steering(transcript);
const IDLE_PLACEHOLDER = ui.prompt.placeholder;
const BUSY_PLACEHOLDER = "The agent is working: a message sent now steers it (Enter to send)";
const tray = new AttachmentTray({
  tray: byTestId("attachments"),
  warning: byTestId("attachment-warning"),
  getLimits: () => limits,
  onChange: () => refreshControls(),
});
const connection = new Connection({
  path: document.body.dataset.wsPath || "/ws",
  handshake,
  onFrame,
  onState: onConnectionState,
});

// ---- status and controls ---------------------------------------------------------------------------

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function showStatus() {
  if (!authenticated) return;
  if (running) {
    if (transcript.waiting) setStatus("waiting", "waiting for you");
    else setStatus("running", "running…");
  } else setStatus("ready", "ready");
}

function refreshControls() {
  transcript.setBusy(running && !transcript.waiting);
  // While a turn runs the composer stays open: what is sent then steers the turn (runtime input).
  ui.send.disabled = !authenticated || preparing;
  ui.send.textContent = running ? "Steer" : "Send";
  ui.send.title = running ? "Send to the running turn (runtime input)" : "";
  ui.prompt.placeholder = running ? BUSY_PLACEHOLDER : IDLE_PLACEHOLDER;
  ui.cancel.hidden = !running;
  ui.cancel.disabled = !authenticated;
  showStatus();
}

function setRunning(flag) {
  const changed = running !== flag;
  running = flag;
  if (changed && !flag) steering.reset();
  refreshControls();
  if (changed) sessionPanel?.schedule(300);
}

function setSessionId(id) {
  const changed = ui.sessionTag.title !== (id || "");
  ui.sessionTag.textContent = id ? `session ${id.slice(0, 8)}` : "";
  ui.sessionTag.title = id || "";
  if (changed) sessionPanel?.schedule(0);
}

function showLimits() {
  ui.limits.textContent = `≤ ${limits.maxFiles} files, ${limits.maxFileSizeMb} MB each`;
}

// ---- WebSocket -------------------------------------------------------------------------------------

/** INIT for a new conversation, ATTACH to resume the saved one (§4.4); signed when there is an identity. */
async function handshake() {
  let frame = { type: "INIT" };
  if (saved.hasSession && !attachFailed) {
    frame = { type: "ATTACH", session_id: saved.data.session_id };
    if (saved.resumeFrom) frame.last_msg_id = saved.resumeFrom;
  }
  handshakeKind = frame.type;
  if (!identity) return frame;
  const to = header.agent.address;
  const signed = frame.type === "ATTACH" ? { session_id: frame.session_id } : {};
  return { ...frame, to, ...(await identity.envelope(signed, to)) };
}

function onConnectionState(state, info = {}) {
  authenticated = false;
  if (state === "connecting") setStatus("connecting", "connecting…");
  else if (state === "reconnecting") {
    // 4003 closes a refused handshake (PROTOCOL §2.3): its ERROR frame just before said why.
    const why = info.code === 4003 ? `refused (${refusal || "handshake refused"})` : "disconnected";
    setStatus("reconnecting", `${why} · retrying in ${Math.round(info.delay / 100) / 10} s`);
  }
  refreshControls();
}

function logRaw(direction, frame) {
  if (!ui.showRaw.checked) return;
  let text = JSON.stringify(frame);
  if (text.length > 2000) text = `${text.slice(0, 2000)}…`;
  ui.raw.append(`${direction} ${text}\n`);
  while (ui.raw.childNodes.length > RAW_LINES) ui.raw.firstChild.remove();
  ui.raw.scrollTop = ui.raw.scrollHeight;
}

function send(frame) {
  const ok = connection.send(frame);
  if (ok) logRaw("→", frame);
  return ok;
}

function sendAnswer(frame, summary) {
  if (!authenticated || !send(frame)) return false;
  saved.markAnswered(String(frame.request_id), summary);
  queueMicrotask(refreshControls);
  return true;
}

function onFrame(frame) {
  logRaw("←", frame);
  switch (frame.type) {
    case "CONNECTED":
      return onConnected(frame);
    case "OUTPUT":
      return onOutput(frame);
    case "ERROR":
      return onError(frame);
    case "AGENT_PROFILE":
      return header.apply({ name: frame.name, address: frame.address, model: frame.model, tools: frame.tools });
    case "RUNTIME_INPUT_ACK":
      return steering.acknowledged(frame);
    case "SESSION_STATUS":
    case "PONG":
      return undefined;
    default:
      return onEvent(frame);
  }
}

function onConnected(frame) {
  authenticated = true;
  refusal = null;
  const status = frame.status;
  if (status === "expired") {
    const hadHistory = Boolean(saved.data.session || saved.data.turn_events.length || saved.data.running);
    saved.reset();
    transcript.reset();
    setRunning(false);
    if (hadHistory) transcript.notice("That conversation is no longer on the server; starting a new one.");
    connection.restart();
    return;
  }
  saved.update({ session_id: frame.session_id });
  setSessionId(frame.session_id);
  if (frame.server_newer && frame.session) adoptServerSession(frame);
  if (status === "running") {
    if (handshakeKind === "ATTACH") transcript.notice("Re-attached to the turn that is still running.");
    saved.update({ running: true });
    setRunning(true);
  } else if (status === "completed" || status === "connected") {
    if (saved.data.running) {
      // The turn ended while this page was away: its OUTPUT was missed, CONNECTED carries the result.
      transcript.settleAll();
      if (frame.result != null) transcript.agentMessage(String(frame.result), { durationMs: frame.duration_ms });
      else transcript.notice("The turn finished while this page was away.");
      saved.endTurn({ session: frame.session ?? saved.data.session, chat_items: frame.chat_items ?? null });
    } else if (frame.session && (frame.session.turn ?? 0) > (saved.data.session?.turn ?? 0)) {
      adoptServerSession(frame);
    }
    setRunning(false);
  } else {
    setRunning(false);
  }
  attachFailed = false;
  refreshControls();
}

/** The host's copy of the conversation is newer than ours (§5.3): show that one. */
function adoptServerSession(frame) {
  saved.endTurn({ session: frame.session, chat_items: frame.chat_items ?? null });
  transcript.reset();
  transcript.history(historyItems(frame.session, frame.chat_items));
  transcript.notice("Showing the server's newer copy of this conversation.");
}

/** Draw one event (false for a repeat). A later event means no earlier request is still waiting. */
function renderEvent(event) {
  if (PROGRESS.has(event.type)) transcript.settleAll();
  return transcript.event(event);
}

function onEvent(event) {
  if (event.session_id && saved.data.session_id && event.session_id !== saved.data.session_id) return;
  if (httpTurn && followHttpTurn(event)) return;
  if (event.type === "session_sync" && event.session && typeof event.session === "object") {
    saved.update({ session: event.session });
  }
  if (!renderEvent(event)) return;
  saved.recordEvent(event);
  if (!running && (event.type === "user_input" || event.type === "user_message")) {
    saved.update({ running: true });
    setRunning(true);
  }
  refreshControls();
}

/**
 * Whether this OUTPUT was already shown: a re-attach may replay a finished turn's terminal frame after
 * CONNECTED "completed" (§4.9 keeps it in the log), and the page then holds that turn's session already.
 */
function isRepeatOutput(frame) {
  if (frame.id != null) {
    if (seenOutputs.has(frame.id)) return true;
    seenOutputs.add(frame.id);
  }
  if (running) return false;
  const turn = Number(frame.session?.turn);
  const known = Number(saved.data.session?.turn);
  return Number.isFinite(turn) && Number.isFinite(known) && turn <= known;
}

function onOutput(frame) {
  const http = httpTurn;
  if (http?.replaying) httpTurn = null;
  if (http?.turn != null && Number(frame.session?.turn) === http.turn) {
    // The HTTP reply showed this turn's answer already; its live end still ends the turn here.
    if (running) endTurnShown(frame);
    return;
  }
  if (isRepeatOutput(frame)) return;
  const via = http?.userShown ? VIA_HTTP : null;
  transcript.settleAll();
  if (frame.status === "cancelled") {
    // D29: an interrupted turn ends with OUTPUT (the conversation goes on): the user's Cancel, not an error.
    if (frame.result) transcript.agentMessage(String(frame.result), { durationMs: frame.duration_ms, via });
    transcript.notice("Cancelled: the agent stopped at its next step.");
  } else {
    transcript.agentMessage(frame.result == null ? "" : String(frame.result), { durationMs: frame.duration_ms, via });
  }
  if (frame.session_id) {
    saved.update({ session_id: frame.session_id });
    setSessionId(frame.session_id);
  }
  saved.endTurn({ session: frame.session ?? saved.data.session, chat_items: frame.chat_items ?? null });
  setRunning(false);
  ui.prompt.focus({ preventScroll: true });
}

/** A turn whose answer is already on the page ended: nothing waits, the composer sends new turns again. */
function endTurnShown(frame) {
  transcript.settleAll();
  saved.endTurn({ session: frame.session ?? saved.data.session, chat_items: frame.chat_items ?? null });
  setRunning(false);
}

function onError(frame) {
  const message = String(frame.message ?? frame.error ?? "unknown error");
  if (frame.code === "STALE_ANSWER") {
    transcript.settleRequest(frame.request_id, "This request is no longer waiting for an answer.", "stale");
    transcript.notice("That answer arrived after the request had moved on; nothing was changed.");
    return;
  }
  if (!authenticated) {
    if (message === refusal) return; // the same refusal on a retry: its card is already shown
    refusal = message;
    transcript.error(message, { code: frame.code });
    if (handshakeKind === "ATTACH" && !attachFailed) {
      // The saved conversation cannot be resumed: forget it and open a new one.
      attachFailed = true;
      saved.reset();
      connection.restart();
    } else if (/signed request required/.test(message)) {
      offerKey();
    }
    return;
  }
  if (running && steering.waiting && isNonTerminalError(frame) && frame.code !== "STALE_ANSWER") {
    return onSteerRefused(frame);
  }
  if (message === "turn cancelled") {
    transcript.notice("Cancelled: the agent stopped at its next step."); // the user's own Cancel, not an error
  } else {
    transcript.error(message, { code: frame.code });
  }
  if (running && !isNonTerminalError(frame)) {
    httpTurn = null;
    transcript.settleAll();
    saved.endTurn();
    setRunning(false);
  }
}

/** The running turn did not take the message (it takes no runtime input, or is ending): it goes on; say so once
 * per message, and give the text back to the composer so it can be sent again after the turn's answer. */
function onSteerRefused(frame) {
  const text = steering.rejected();
  if (frame.code === REJECTED || /already has a running agent/.test(String(frame.message ?? ""))) {
    transcript.notice("The agent does not take messages while it works: send it again after it answers.", "warn");
  } else transcript.error(String(frame.message ?? "refused"), { code: frame.code });
  if (text != null && !ui.prompt.value) ui.prompt.value = text;
}

/** At `strict` an unsigned page is refused: say so once, with the button that fixes it (a key in this browser). */
function offerKey() {
  const button = el("button", { type: "button", class: "btn btn-primary btn-small", testid: "offer-key",
    text: "Create a key in this browser" });
  button.addEventListener("click", () => {
    button.disabled = true;
    byTestId("identity-panel").open = true;
    byTestId("identity-generate").click();
  });
  const card = transcript.notice("This agent only accepts signed requests (trust: strict). A key made and kept in this browser signs them; or import yours in the Identity panel.", "warn");
  card.append(button);
}

// ---- sending ---------------------------------------------------------------------------------------

async function submit() {
  const prompt = ui.prompt.value;
  if (!prompt.trim()) {
    ui.prompt.focus();
    return;
  }
  if (!authenticated || preparing) return;
  if (running) {
    steer(prompt);
    return;
  }
  httpTurn = null; // this page's own turn: a late stream of an HTTP turn is no longer expected
  const problem = tray.error();
  if (problem) {
    transcript.error(problem);
    return;
  }
  preparing = true;
  refreshControls();
  const items = tray.take();
  let attachments;
  try {
    attachments = await tray.payload(items);
  } catch (error) {
    preparing = false;
    tray.add(items.map((item) => item.file));
    transcript.error(`Could not read an attachment: ${error?.message || error}`);
    refreshControls();
    return;
  }
  preparing = false;
  const frame = { type: "INPUT", prompt, input_id: randomId() };
  if (saved.data.session) frame.session = saved.data.session;
  if (attachments.images.length) frame.images = attachments.images;
  if (attachments.files.length) frame.files = attachments.files;
  if (!send(frame)) {
    tray.add(items.map((item) => item.file));
    transcript.error("Not connected: the message was not sent.");
    refreshControls();
    return;
  }
  transcript.userMessage(prompt, { attachments: items.map((item) => attachmentChip(item)), pending: true });
  ui.prompt.value = "";
  saved.update({ running: true, turn_events: [], events_truncated: false, last_msg_id: null, answered: {} });
  setRunning(true);
}

/** Runtime input: the prompt goes to the running turn; attachments wait for the next turn. */
function steer(prompt) {
  if (tray.items.length) {
    transcript.notice("Attachments go with a new message: send them after the agent answers.", "warn");
    return;
  }
  const frame = { type: "INPUT", prompt, input_id: randomId() };
  if (!send(frame)) {
    transcript.error("Not connected: the message was not sent.");
    return;
  }
  steering.sending(frame.input_id, prompt);
  ui.prompt.value = "";
}

function cancel() {
  if (!running) return;
  if (send({ type: "INTERRUPT" })) setStatus("cancelling", "cancelling…");
}

function newConversation() {
  httpTurn = null;
  saved.reset();
  transcript.reset();
  tray.clear();
  seenOutputs.clear();
  attachFailed = false;
  setSessionId(null);
  setRunning(false);
  connection.restart();
  ui.prompt.focus();
}

// ---- wiring ----------------------------------------------------------------------------------------

function wire() {
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  ui.prompt.addEventListener("paste", (event) => {
    const files = event.clipboardData?.files;
    if (files && files.length) {
      event.preventDefault();
      tray.add(files);
    }
  });
  ui.cancel.addEventListener("click", cancel);
  ui.newButton.addEventListener("click", newConversation);
  ui.fileInput.addEventListener("change", () => {
    tray.add(ui.fileInput.files);
    ui.fileInput.value = "";
  });
  ui.attach.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      ui.fileInput.click();
    }
  });
  wireDrop();
  const applyLlm = () => ui.transcript.classList.toggle("show-llm", ui.showLlm.checked);
  ui.showLlm.addEventListener("change", applyLlm);
  applyLlm();
  ui.showRaw.addEventListener("change", () => {
    ui.raw.hidden = !ui.showRaw.checked;
  });
  byTestId("ws-url").textContent = wsUrl(document.body.dataset.wsPath || "/ws");
  window.addEventListener("pagehide", () => saved.saveNow());
}

function wireDrop() {
  let depth = 0;
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  ui.chat.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    ui.chat.classList.add("dragging");
  });
  ui.chat.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  ui.chat.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) ui.chat.classList.remove("dragging");
  });
  ui.chat.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    ui.chat.classList.remove("dragging");
    tray.add(event.dataTransfer.files);
  });
}

/** Re-draw what this browser already showed: earlier turns, then the running turn's events so far. */
function restore() {
  const data = saved.data;
  if (!data.session_id) return;
  setSessionId(data.session_id);
  transcript.history(historyItems(data.session, data.chat_items));
  for (const event of data.turn_events) renderEvent(event);
  for (const [requestId, summary] of Object.entries(data.answered || {})) transcript.settleRequest(requestId, summary);
  if (data.running) running = true;
}

async function loadInfo() {
  const reply = await fetchJson("/info");
  if (!reply.ok || !reply.body || typeof reply.body !== "object") return;
  header.apply(reply.body);
  limits = limitsFrom(reply.body.accepted_inputs);
  showLimits();
  tray.render();
}

/** The HTTP panel is about to POST a prompt on the chat's session: its turn will stream to this page too. */
function httpSent(body) {
  httpTurn = body.session ? { prompt: body.prompt, userShown: false, turn: null, replaying: false } : null;
}

/**
 * The live stream of the HTTP panel's turn: its `user_message` is the panel's prompt (labelled so); once the
 * reply has drawn the turn, the stream's copy of it is skipped. True when `event` is not to be drawn.
 */
function followHttpTurn(event) {
  const http = httpTurn;
  if (event.type === "user_message") {
    if (event.content !== http.prompt) {
      httpTurn = null; // another client's turn
      return false;
    }
    if (!http.userShown) transcript.userMessage(http.prompt, { via: VIA_HTTP, pending: true });
    http.userShown = true;
    return true;
  }
  if (http.turn == null) return false; // no reply yet: the stream draws the turn
  if (event.type === "user_input" && !event.runtime_input) {
    if (Number(event.turn) > http.turn) {
      httpTurn = null; // a later turn
      return false;
    }
    http.replaying = true;
  }
  return http.replaying;
}

/** A POST /input that continued the chat's session is part of the conversation: show what the live stream has
 * not shown of it yet, and keep its session. */
function httpResult(body, reply) {
  if (!body.session) return;
  const http = httpTurn;
  const turn = Number(reply.session?.turn);
  const answered = Number.isFinite(turn) && Number(saved.data.session?.turn) >= turn; // its live OUTPUT came first
  if (!answered) {
    if (!http?.userShown) transcript.userMessage(body.prompt, { via: VIA_HTTP });
    transcript.settleAll();
    transcript.agentMessage(reply.result == null ? "" : String(reply.result), { durationMs: reply.duration_ms, via: VIA_HTTP });
  }
  saved.endTurn({ session_id: reply.session_id, session: reply.session ?? saved.data.session, chat_items: reply.chat_items ?? null });
  httpTurn = null;
  if (!answered && http && Number.isFinite(turn)) {
    // The stream may still bring this turn (all of it, or its rest): skip it up to its OUTPUT.
    httpTurn = { ...http, userShown: true, turn, replaying: running };
  }
}

identity = await BrowserIdentity.load();
wire();
showLimits();
restore();
refreshControls();
header.startHealth();
loadInfo();
connection.connect();
sessionPanel = new SessionPanel({
  getSessionId: () => saved.data.session_id,
  isRunning: () => running,
  signHeaders: async (method, path) => (identity ? identity.readHeaders(method, path, header.agent.address) : {}),
});
sessionPanel.schedule(0);
new HttpPanel({
  getSession: () => saved.data.session || (saved.data.session_id ? { session_id: saved.data.session_id } : null),
  onSend: httpSent,
  onResult: httpResult,
  signBody: async (body) => (identity ? identity.envelope(body, header.agent.address) : body),
});
new IdentityPanel({
  identity,
  onChange: (next) => {
    identity = next;
    // Sessions belong to whoever started them (§3.1): a new identity starts a new conversation.
    newConversation();
    transcript.notice(next ? `Now signing as ${next.address}.` : "Now anonymous (unsigned).");
  },
});
