// What the page remembers across reloads (localStorage), so a reload re-attaches to its conversation
// (PROTOCOL §4.4 ATTACH, §4.9 resume): the session id, the last `session` object, the rendering list,
// the id of the last event seen, whether a turn was running, and that turn's events so far.

const VERSION = 1;
// Events of the running turn kept for re-rendering after a reload; session_sync carries whole sessions
// and is not needed for that.
const NOT_KEPT = new Set(["session_sync", "PING"]);
const MAX_KEPT_EVENTS = 500;

function emptyState() {
  return {
    v: VERSION,
    session_id: null,
    session: null,
    chat_items: null,
    last_msg_id: null,
    running: false,
    turn_events: [],
    events_truncated: false,
    answered: {},
  };
}

export class SavedConversation {
  constructor(agentAddress) {
    this.key = `connectonion.docs.${agentAddress || "agent"}`;
    this.data = this.load();
    this.timer = null;
  }

  load() {
    try {
      const raw = localStorage.getItem(this.key);
      const parsed = raw ? JSON.parse(raw) : null;
      if (parsed && parsed.v === VERSION) return { ...emptyState(), ...parsed };
    } catch {
      // Corrupt or unavailable storage: start clean.
    }
    return emptyState();
  }

  get hasSession() {
    return Boolean(this.data.session_id);
  }

  reset() {
    this.data = emptyState();
    this.saveNow();
  }

  update(patch) {
    Object.assign(this.data, patch);
    this.saveSoon();
  }

  /** Remember one turn event (for re-rendering after a reload) and its id (for ATTACH last_msg_id). */
  recordEvent(event) {
    if (event.id) this.data.last_msg_id = String(event.id);
    if (!NOT_KEPT.has(event.type)) {
      if (this.data.turn_events.length < MAX_KEPT_EVENTS) this.data.turn_events.push(event);
      else this.data.events_truncated = true;
    }
    this.saveSoon();
  }

  markAnswered(requestId, summary) {
    this.data.answered[requestId] = summary;
    this.saveSoon();
  }

  /** The resume point for ATTACH: null when the kept events are incomplete (the host then replays all). */
  get resumeFrom() {
    return this.data.events_truncated ? null : this.data.last_msg_id;
  }

  /** A turn ended: its events now live in `chat_items`/`session`. */
  endTurn(patch = {}) {
    Object.assign(this.data, { running: false, turn_events: [], events_truncated: false, answered: {} }, patch);
    this.saveNow();
  }

  saveSoon() {
    if (this.timer) return;
    this.timer = setTimeout(() => this.saveNow(), 150);
  }

  saveNow() {
    clearTimeout(this.timer);
    this.timer = null;
    try {
      localStorage.setItem(this.key, JSON.stringify(this.data));
    } catch {
      // Quota exceeded (a huge session): keep what resumes a turn and drop the rest. Without kept events
      // ATTACH omits last_msg_id, so the host replays the whole turn instead.
      try {
        const slim = { ...this.data, turn_events: [], events_truncated: true, chat_items: null };
        localStorage.setItem(this.key, JSON.stringify(slim));
      } catch {
        try {
          localStorage.removeItem(this.key);
        } catch {
          // Storage unavailable: the page still works, it just will not resume after a reload.
        }
      }
    }
  }
}
