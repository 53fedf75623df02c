// The chat's WebSocket to our own host (PROTOCOL §4): opens `/ws` on the page's origin, sends the seed
// handshake (INIT for a new conversation, ATTACH to resume one), answers PING with PONG, and reconnects
// with backoff after a drop. Frames go to `onFrame`; the handshake to send is asked from `handshake()`
// on every (re)connect (it may return a promise), so a reconnect resumes wherever the conversation is by then.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

export class Connection {
  constructor({ path, handshake, onFrame, onState }) {
    this.url = wsUrl(path);
    this.handshake = handshake;
    this.onFrame = onFrame;
    this.onState = onState;
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.authenticated = false;
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.authenticated = false;
    this.onState("connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", async () => {
      if (socket !== this.socket) return;
      let frame;
      try {
        frame = await this.handshake(); // may sign, which is asynchronous
      } catch (error) {
        this.onFrame({ type: "ERROR", message: `could not build the handshake: ${error?.message || error}` });
        return;
      }
      if (socket === this.socket) this.send(frame);
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // The host only sends JSON objects (§4.1); ignore anything else.
      }
      if (!frame || typeof frame !== "object") return;
      if (frame.type === "PING") {
        this.send({ type: "PONG" });
        return;
      }
      if (frame.type === "CONNECTED") {
        this.authenticated = true;
        this.attempt = 0;
      }
      this.onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.authenticated = false;
      this.scheduleRetry(event.code);
    });
  }

  scheduleRetry(code) {
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.onState("reconnecting", { code, delay });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Close and open again now (a new conversation, or an ATTACH that came back `expired`). */
  restart() {
    const old = this.socket;
    this.socket = null;
    if (old && old.readyState <= WebSocket.OPEN) old.close(1000, "restart");
    this.attempt = 0;
    this.connect();
  }

  /** Send one frame; false when the socket is not open. */
  send(frame) {
    if (!this.open) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }
}
