// Optional signed requests from the browser (PROTOCOL §2): an Ed25519 key kept by this page, used to sign
// the WebSocket handshake, POST /input and the GET /sessions/{id} headers, so /docs also works at `strict`.
// WebCrypto only: no key ever leaves the browser, and a browser without Ed25519 simply stays unsigned.

const STORAGE_KEY = "connectonion.docs.identity";
// DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows (RFC 8410).
const PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

function fromHex(text) {
  const clean = text.trim().replace(/^0x/i, "");
  if (!/^[0-9a-fA-F]{64}$/.test(clean)) throw new Error("a private key is 64 hex characters (32 bytes)");
  return Uint8Array.from(clean.match(/../g), (pair) => parseInt(pair, 16));
}

function fromBase64Url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/**
 * The canonical text of a payload (§2.2 form 2): keys sorted at every depth, no whitespace, non-ASCII
 * left literal. JSON.stringify already writes strings and numbers the way Python's json.dumps does.
 */
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item ?? null)).join(",")}]`;
  if (value && typeof value === "object") {
    const keys = Object.keys(value).filter((key) => value[key] !== undefined).sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

export function canSign() {
  return Boolean(globalThis.crypto?.subtle);
}

export class BrowserIdentity {
  constructor(privateKey, seed, publicKey) {
    this.privateKey = privateKey;
    this.seed = seed;
    this.address = `0x${hex(publicKey)}`;
  }

  static async fromSeed(seed) {
    const der = new Uint8Array([...PKCS8_PREFIX, ...seed]);
    const privateKey = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", privateKey);
    return new BrowserIdentity(privateKey, seed, fromBase64Url(jwk.x));
  }

  static async fromHex(text) {
    return BrowserIdentity.fromSeed(fromHex(text));
  }

  static async generate() {
    return BrowserIdentity.fromSeed(crypto.getRandomValues(new Uint8Array(32)));
  }

  /** The identity saved in this browser, or null. */
  static async load() {
    if (!canSign()) return null;
    try {
      const saved = localStorage.getItem(STORAGE_KEY);
      return saved ? await BrowserIdentity.fromHex(saved) : null;
    } catch {
      return null;
    }
  }

  save() {
    localStorage.setItem(STORAGE_KEY, hex(this.seed));
  }

  static forget() {
    localStorage.removeItem(STORAGE_KEY);
  }

  get seedHex() {
    return hex(this.seed);
  }

  async signText(text) {
    const signature = await crypto.subtle.sign({ name: "Ed25519" }, this.privateKey, new TextEncoder().encode(text));
    return hex(signature);
  }

  /** `{payload, from, signature}` (§2.1) with `to`, `timestamp` and a fresh `nonce` added to the payload. */
  async envelope(payload, to) {
    const full = { ...payload, to, timestamp: Math.floor(Date.now() / 1000), nonce: randomHex(16) };
    return { payload: full, from: this.address, signature: await this.signText(canonicalJson(full)) };
  }

  /** Headers for a signed read without a body (§2.5). `path` without its query; `query` already sorted. */
  async readHeaders(method, path, to, query = "") {
    const timestamp = Math.floor(Date.now() / 1000);
    const requestId = randomHex(16);
    const signed = { method, path, query, body_sha256: EMPTY_SHA256, timestamp, request_id: requestId, to };
    return {
      "X-Co-From": this.address,
      "X-Co-Signature": await this.signText(canonicalJson(signed)),
      "X-Co-Timestamp": String(timestamp),
      "X-Co-To": to,
      "X-Co-Request-Id": requestId,
    };
  }
}

function randomHex(bytes) {
  return hex(crypto.getRandomValues(new Uint8Array(bytes)));
}
