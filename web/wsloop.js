// wsloop.js: a browser client for wsloop's topics protocol (ws://HOST/pubsub),
// described in docs/pubsub.md. A dependency-free ES module, no build step:
//
//   import { connect } from "/wsloop.js";
//   const c = connect(`ws://${location.host}/pubsub`, { onState: (s) => console.log(s) });
//   await c.subscribe("prices.AAPL", (data, topic) => console.log(topic, data));
//   await c.publish("prices.AAPL", { bid: 189.5 });
//
// It reconnects by itself (jittered exponential back-off, 0.5 s doubling to
// 10 s) and then subscribes again to every topic it had.

const OP_PUBLISH = 0x01;
const OP_MESSAGE = 0x81;
const FLAG_ID = 0x40;
const MAX_TOPIC_BYTES = 128;
const MAX_BATCH = 256; // topics in one subscribe request
const MAX_QUEUED = 1000; // publishes waiting for a connection
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
const STABLE_MS = 5000; // a connection that lasted this long resets the back-off

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A refused or failed request. `code` is one of the protocol's error codes
 * (docs/pubsub.md), or, from this client: "disconnected" (the connection
 * dropped before the answer), "closed" (close() was called), "unsubscribed",
 * "queue_full".
 */
export class PubsubError extends Error {
  /** @param {string} code @param {string} reason */
  constructor(code, reason) {
    super(reason);
    this.name = "PubsubError";
    this.code = code;
  }
}

/**
 * The UTF-8 bytes of a topic name, checked with the server's rule: 1 to 128
 * bytes, no control characters. Throws a PubsubError("bad_topic").
 * @param {string} topic
 * @returns {Uint8Array}
 */
export function topicBytes(topic) {
  if (typeof topic !== "string") throw new PubsubError("bad_topic", "a topic must be a string");
  const bytes = encoder.encode(topic);
  if (bytes.length === 0) throw new PubsubError("bad_topic", "topic is empty");
  if (bytes.length > MAX_TOPIC_BYTES) throw new PubsubError("bad_topic", "topic is longer than 128 bytes");
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(topic)) {
    throw new PubsubError("bad_topic", "topic contains a control character");
  }
  return bytes;
}

/** @param {ArrayBuffer | ArrayBufferView} data @returns {Uint8Array} */
function asBytes(data) {
  return data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** @param {unknown} data */
function isBinary(data) {
  return data instanceof ArrayBuffer || ArrayBuffer.isView(data);
}

/**
 * Encodes a message in the binary form: op, [id: u32 big-endian, when given,
 * with op | 0x40], topic length, topic, payload.
 * @param {number} op @param {number | null} id @param {string} topic
 * @param {ArrayBuffer | ArrayBufferView} [payload]
 * @returns {Uint8Array}
 */
export function encodeBinary(op, id, topic, payload = new Uint8Array(0)) {
  const t = topicBytes(topic);
  const body = asBytes(payload);
  const head = id == null ? 1 : 5;
  const out = new Uint8Array(head + 1 + t.length + body.length);
  out[0] = id == null ? op : op | FLAG_ID;
  if (id != null) new DataView(out.buffer).setUint32(1, id);
  out[head] = t.length;
  out.set(t, head + 1);
  out.set(body, head + 1 + t.length);
  return out;
}

/**
 * Decodes a delivery in the binary form (op 0x81).
 * @param {ArrayBuffer | ArrayBufferView} data
 * @returns {{topic: string, data: Uint8Array} | null} null if it is not one
 */
export function decodeBinary(data) {
  const bytes = asBytes(data);
  if (bytes.length < 2 || bytes[0] !== OP_MESSAGE || bytes.length < 2 + bytes[1]) return null;
  return { topic: decoder.decode(bytes.subarray(2, 2 + bytes[1])), data: bytes.subarray(2 + bytes[1]) };
}

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "closed"} State
 * @typedef {(data: any, topic: string) => void} Handler JSON deliveries get
 *   the parsed `data`; binary ones a Uint8Array.
 * @typedef {object} Options
 * @property {(state: State, detail: object) => void} [onState] every state
 *   change; for "reconnecting", detail has `attempt`, `delay` (ms), `code`, `reason`.
 *   "open" is told once the subscriptions have been requested again and the
 *   publishes made while disconnected sent, so what the handler sends follows them.
 * @property {(err: PubsubError) => void} [onError] errors that match no
 *   request (no id), and failed resubscriptions.
 * @property {typeof WebSocket} [WebSocket] the WebSocket class (default: the global one).
 */

/**
 * Opens a connection to a /pubsub endpoint; it stays up until close().
 * @param {string} url e.g. `ws://${location.host}/pubsub`
 * @param {Options} [options]
 * @returns {Client}
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}

export class Client {
  #url;
  #opts;
  /** @type {WebSocket | null} */ #ws = null;
  /** @type {State} */ #state = "connecting";
  #attempt = 0; // reconnect attempts since the last stable connection
  #openedAt = 0;
  #timer = undefined;
  #nextId = 1;
  /** topic -> { handlers: Set<Handler>, waiters: {resolve, reject}[], acked: boolean } */
  #topics = new Map();
  /** id -> { resolve, reject } for publish/unsubscribe, or { topics: string[] } for subscribe */
  #pending = new Map();
  /** publishes made while not connected: { id, frame } */
  #queue = [];

  /** @param {string} url @param {Options} options */
  constructor(url, options) {
    this.#url = url;
    this.#opts = options;
    this.#setState("connecting", {});
    this.#open();
  }

  /** @returns {State} */
  get state() {
    return this.#state;
  }

  /**
   * The extensions the server accepted on the open connection (the
   * WebSocket's `extensions`, e.g. "permessage-deflate"); "" when no
   * connection is open.
   * @returns {string}
   */
  get extensions() {
    return this.#state === "open" ? (this.#ws?.extensions ?? "") : "";
  }

  /**
   * Subscribes to `topic` (again after every reconnect) and calls `onMessage`
   * for each delivery. Resolves on the server's ack; rejects with its error.
   * @param {string} topic @param {Handler} [onMessage]
   * @returns {Promise<void>}
   */
  subscribe(topic, onMessage) {
    if (this.#state === "closed") return Promise.reject(new PubsubError("closed", "the client is closed"));
    try {
      topicBytes(topic);
    } catch (e) {
      return Promise.reject(e);
    }
    let sub = this.#topics.get(topic);
    if (!sub) {
      sub = { handlers: new Set(), waiters: [], acked: false };
      this.#topics.set(topic, sub);
      if (this.#state === "open") this.#sendSubscribe([topic]);
    }
    if (onMessage) sub.handlers.add(onMessage);
    if (sub.acked) return Promise.resolve();
    return new Promise((resolve, reject) => sub.waiters.push({ resolve, reject }));
  }

  /**
   * Stops the deliveries of `topic` (every handler). Resolves on the ack, or
   * at once when not connected; "not subscribed" counts as done.
   * @param {string} topic
   * @returns {Promise<void>}
   */
  unsubscribe(topic) {
    const sub = this.#topics.get(topic);
    if (!sub) return Promise.resolve();
    this.#topics.delete(topic);
    for (const w of sub.waiters) w.reject(new PubsubError("unsubscribed", "unsubscribed before the ack"));
    if (this.#state !== "open") return Promise.resolve();
    return this.#request((id) => JSON.stringify({ type: "unsubscribe", topic, id })).catch((e) => {
      if (e.code !== "not_subscribed" && e.code !== "disconnected") throw e;
    });
  }

  /**
   * Publishes `data` on `topic`: an ArrayBuffer or typed array goes in the
   * binary form, anything else as JSON. Resolves on the server's ack. Made
   * while disconnected, it is sent after the reconnect.
   * @param {string} topic @param {any} data
   * @returns {Promise<void>}
   */
  publish(topic, data) {
    if (this.#state === "closed") return Promise.reject(new PubsubError("closed", "the client is closed"));
    if (data === undefined) return Promise.reject(new PubsubError("bad_request", "data is undefined"));
    try {
      topicBytes(topic);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#state !== "open" && this.#queue.length >= MAX_QUEUED) {
      return Promise.reject(new PubsubError("queue_full", "too many publishes waiting for a connection"));
    }
    return this.#request((id) =>
      isBinary(data) ? encodeBinary(OP_PUBLISH, id, topic, data) : JSON.stringify({ type: "publish", topic, data, id }),
    );
  }

  /** Closes the connection for good; pending requests reject with "closed". */
  close() {
    if (this.#state === "closed") return;
    clearTimeout(this.#timer);
    const ws = this.#ws;
    this.#ws = null;
    ws?.close(1000);
    this.#failAll(new PubsubError("closed", "the client is closed"), true);
    this.#setState("closed", {});
  }

  // ---- internals ----------------------------------------------------------------

  #open() {
    const WS = this.#opts.WebSocket ?? globalThis.WebSocket;
    let ws;
    try {
      ws = new WS(this.#url);
    } catch (e) {
      // A malformed URL never gets better: give up.
      this.#opts.onError?.(new PubsubError("closed", `cannot connect: ${e.message}`));
      this.close();
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this.#ws === ws && this.#opened();
    ws.onmessage = (ev) => this.#ws === ws && this.#receive(ev.data);
    ws.onclose = (ev) => this.#ws === ws && this.#lost(ev);
    ws.onerror = () => {}; // a close event always follows
    this.#ws = ws;
  }

  #opened() {
    this.#openedAt = Date.now();
    this.#state = "open"; // (#sendSubscribe and #request look at it)
    const topics = [...this.#topics.keys()];
    for (let i = 0; i < topics.length; i += MAX_BATCH) this.#sendSubscribe(topics.slice(i, i + MAX_BATCH));
    const queued = this.#queue;
    this.#queue = [];
    for (const q of queued) this.#ws.send(q.frame);
    // Told last: what the handler sends goes after the resubscriptions and
    // the publishes that waited (in the order they were made).
    this.#setState("open", {});
  }

  /** @param {CloseEvent} ev */
  #lost(ev) {
    this.#ws = null;
    if (this.#openedAt && Date.now() - this.#openedAt >= STABLE_MS) this.#attempt = 0;
    this.#openedAt = 0;
    this.#failAll(new PubsubError("disconnected", "the connection dropped before the answer"), false);
    // "Equal jitter": uniformly between half the step and the whole step.
    const step = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.#attempt);
    const delay = step / 2 + Math.random() * (step / 2);
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.#open(), delay);
    this.#setState("reconnecting", { attempt: this.#attempt, delay, code: ev?.code, reason: ev?.reason });
  }

  /**
   * Rejects the pending requests with `err`. Unless `everything`, the
   * subscriptions (sent again on reconnect) and the queued publishes (not
   * sent yet) stay.
   */
  #failAll(err, everything) {
    const queued = new Set(everything ? [] : this.#queue.map((q) => q.id));
    if (everything) this.#queue = [];
    for (const [id, p] of this.#pending) {
      if (queued.has(id)) continue;
      this.#pending.delete(id);
      p.reject?.(err);
    }
    for (const sub of this.#topics.values()) {
      sub.acked = false;
      if (everything) for (const w of sub.waiters) w.reject(err);
    }
    if (everything) this.#topics.clear();
  }

  /** Sends a request made by `make(id)`; resolves on its ack. */
  #request(make) {
    const id = this.#id();
    const frame = make(id);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      if (this.#state === "open") this.#ws.send(frame);
      else this.#queue.push({ id, frame });
    });
  }

  /** @param {string[]} topics */
  #sendSubscribe(topics) {
    const id = this.#id();
    this.#pending.set(id, { topics });
    const req = topics.length === 1 ? { type: "subscribe", topic: topics[0], id } : { type: "subscribe", topics, id };
    this.#ws.send(JSON.stringify(req));
  }

  /** Ids are u32 (the binary form's), never 0. */
  #id() {
    const id = this.#nextId;
    this.#nextId = id >= 0xffffffff ? 1 : id + 1;
    return id;
  }

  /** @param {string | ArrayBuffer} data */
  #receive(data) {
    if (typeof data !== "string") {
      const m = decodeBinary(data);
      if (m) this.#deliver(m.topic, m.data);
      return;
    }
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (m?.type === "message") this.#deliver(m.topic, m.data);
    else if (m?.type === "ack") this.#settle(m.id, null);
    else if (m?.type === "error") {
      const err = new PubsubError(String(m.code), String(m.reason));
      if (!this.#settle(m.id, err)) this.#opts.onError?.(err);
    }
  }

  #deliver(topic, data) {
    const sub = this.#topics.get(topic);
    if (!sub) return;
    for (const handler of sub.handlers) {
      try {
        handler(data, topic);
      } catch (e) {
        queueMicrotask(() => {
          throw e; // reported like any uncaught error, without stopping the other handlers
        });
      }
    }
  }

  /** Answers request `id` (err null: ack); false if no request has that id. */
  #settle(id, err) {
    const p = this.#pending.get(id);
    if (!p) return false;
    this.#pending.delete(id);
    if (!p.topics) {
      if (err) p.reject(err);
      else p.resolve();
      return true;
    }
    for (const topic of p.topics) {
      const sub = this.#topics.get(topic);
      if (!sub) continue;
      if (err) this.#topics.delete(topic);
      else sub.acked = true;
      for (const w of sub.waiters) (err ? w.reject(err) : w.resolve());
      sub.waiters = [];
    }
    if (err && p.topics.length > 1) this.#opts.onError?.(err);
    return true;
  }

  #setState(state, detail) {
    this.#state = state;
    this.#opts.onState?.(state, detail);
  }
}
