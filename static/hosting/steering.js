// Runtime input (issue 17.7b): a message typed while the agent works is sent as INPUT on the same socket. The
// host hands it to the running turn (RUNTIME_INPUT_ACK) or refuses it (ERROR code RUNTIME_INPUT_REJECTED,
// retryable: the turn goes on). The agent reports reading it with a user_input event marked runtime_input.
import { el } from "./dom.js";

export const REJECTED = "RUNTIME_INPUT_REJECTED";
const STATES = {
  sending: "steering · sending…",
  received: "steering · received by the host",
  read: "steering · read by the agent",
  rejected: "steering · not delivered",
};

/** One steering bubble in the transcript: a user message marked as sent during a turn. */
export function steeringBubble(transcript, text, state) {
  const via = el("span", { class: "via", testid: "steer-state", text: STATES[state] });
  const node = transcript.item(
    "item-user item-steer",
    "message-steer",
    el("div", { class: "bubble bubble-user bubble-steer" }, via, el("p", { class: "message-text", text })),
  );
  node.dataset.state = state;
  node.scrollIntoView({ block: "end" });
  return node;
}

function mark(node, state) {
  node.dataset.state = state;
  const via = node.querySelector("[data-testid=steer-state]");
  if (via) via.textContent = STATES[state];
}

/** The messages this page sent during the running turn, in order, each waiting for the host's answer. */
export class Steering {
  constructor(transcript) {
    this.transcript = transcript;
    this.sent = []; // {id, text, node}; answered in order (the host answers INPUTs in the order it reads them)
  }

  /** Show the message as sent; ``id`` is the INPUT's input_id (the host echoes it in the ACK). */
  sending(id, text) {
    this.sent.push({ id, text, node: steeringBubble(this.transcript, text, "sending"), answered: false });
  }

  /** RUNTIME_INPUT_ACK: the message is in the turn's inbox. */
  acknowledged(frame) {
    const entry = this.sent.find((s) => !s.answered && (frame.input_id == null || s.id === frame.input_id));
    if (!entry) return;
    entry.answered = true;
    if (entry.node.dataset.state === "sending") mark(entry.node, "received");
  }

  /** ERROR while steering: the oldest unanswered message was refused; returns its text (null if none). */
  rejected() {
    const entry = this.sent.find((s) => !s.answered);
    if (!entry) return null;
    entry.answered = true;
    mark(entry.node, "rejected");
    return entry.text;
  }

  /** The agent's user_input event for a runtime input: mark ours read, or show one sent elsewhere. */
  read(event) {
    const text = String(event.content ?? "");
    const entry = this.sent.find((s) => s.text === text && s.node.dataset.state !== "read"
      && s.node.dataset.state !== "rejected");
    if (entry) {
      entry.answered = true;
      mark(entry.node, "read");
    } else steeringBubble(this.transcript, text, "read");
  }

  /** The turn ended: later messages start a new turn. */
  reset() {
    this.sent = [];
  }

  get waiting() {
    return this.sent.some((s) => !s.answered);
  }
}
