// Tests of web/wsloop.js against a fake WebSocket (no server needed):
//   node --test tests/js/
// Timers and Math.random are mocked, so reconnection runs instantly.

import { afterEach, beforeEach, describe, mock, test } from "node:test";
import assert from "node:assert/strict";
import { connect, decodeBinary, encodeBinary, PubsubError, topicBytes } from "../../web/wsloop.js";

/** A WebSocket the test drives from the "server" side. */
class FakeWebSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.all.push(this);
  }
  send(data) {
    this.sent.push(data);
  }
  close(code) {
    this.closedWith = code;
  }
  // ---- server side ----
  open() {
    this.onopen?.({});
  }
  receive(data) {
    this.onmessage?.({ data });
  }
  drop(code = 1006, reason = "") {
    this.onclose?.({ code, reason });
  }
  /** The JSON requests sent so far, parsed (binary ones as byte arrays). */
  requests() {
    return this.sent.map((d) => (typeof d === "string" ? JSON.parse(d) : [...d]));
  }
}

const last = () => FakeWebSocket.all.at(-1);
const ack = (ws, id) => ws.receive(JSON.stringify({ type: "ack", id }));
const settled = () => new Promise((resolve) => setImmediate(resolve));

let states;
function client(extra = {}) {
  states = [];
  return connect("ws://h/pubsub", {
    WebSocket: FakeWebSocket,
    onState: (s, d) => states.push([s, d]),
    ...extra,
  });
}

beforeEach(() => {
  FakeWebSocket.all = [];
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  mock.method(Math, "random", () => 1);
});
afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

describe("codec", () => {
  test("topic names follow the server's rule", () => {
    assert.deepEqual([...topicBytes("é")], [0xc3, 0xa9]);
    assert.equal(topicBytes("a".repeat(128)).length, 128);
    for (const bad of ["", "a".repeat(129), "€".repeat(43), "a\nb", "\u007f", "\u0085", 5, null]) {
      assert.throws(() => topicBytes(bad), (e) => e instanceof PubsubError && e.code === "bad_topic", String(bad));
    }
  });

  test("binary form byte layout (same bytes as the Rust tests)", () => {
    assert.deepEqual([...encodeBinary(0x01, null, "ab", new Uint8Array([0, 255]))], [1, 2, 97, 98, 0, 255]);
    assert.deepEqual([...encodeBinary(0x01, 0x01020304, "ab", new Uint8Array([120]))], [0x41, 1, 2, 3, 4, 2, 97, 98, 120]);
    assert.deepEqual([...encodeBinary(0x02, 7, "é")], [0x42, 0, 0, 0, 7, 2, 0xc3, 0xa9]);
    assert.equal(encodeBinary(0x01, null, "t", new Uint16Array([0x0102]).subarray(0, 1)).length, 5, "views: their bytes only");
    const m = decodeBinary(new Uint8Array([0x81, 2, 0xc3, 0xa9, 9, 8]).buffer);
    assert.equal(m.topic, "é");
    assert.deepEqual([...m.data], [9, 8]);
    assert.equal(decodeBinary(new Uint8Array([0x81, 3, 97])), null, "truncated");
    assert.equal(decodeBinary(new Uint8Array([0x01, 1, 97])), null, "not a delivery");
    assert.equal(decodeBinary(new Uint8Array([])), null);
  });
});

describe("client", () => {
  test("subscribe: request with an id, resolves on the ack, delivers JSON and binary", async () => {
    const c = client();
    assert.equal(c.state, "connecting");
    const ws = last();
    ws.open();
    assert.equal(c.state, "open");
    const got = [];
    const p = c.subscribe("prices.AAPL", (data, topic) => got.push([topic, data]));
    assert.deepEqual(ws.requests(), [{ type: "subscribe", topic: "prices.AAPL", id: 1 }]);
    ack(ws, 1);
    await p;
    ws.receive(JSON.stringify({ type: "message", topic: "prices.AAPL", data: { bid: 1.5 } }));
    ws.receive(new Uint8Array([0x81, 11, ...new TextEncoder().encode("prices.AAPL"), 7]).buffer);
    ws.receive(JSON.stringify({ type: "message", topic: "other", data: 1 }));
    ws.receive("not json");
    assert.equal(got.length, 2);
    assert.deepEqual(got[0], ["prices.AAPL", { bid: 1.5 }]);
    assert.equal(got[1][0], "prices.AAPL");
    assert.ok(got[1][1] instanceof Uint8Array);
    assert.deepEqual([...got[1][1]], [7]);
    // Subscribing again adds a handler, sends nothing, resolves at once.
    await c.subscribe("prices.AAPL", () => {});
    assert.equal(ws.sent.length, 1);
    assert.deepEqual(
      states.map((s) => s[0]),
      ["connecting", "open"],
    );
  });

  test("publish: JSON or binary form, ack resolves, error rejects with its code", async () => {
    const c = client();
    const ws = last();
    ws.open();
    const a = c.publish("t", { x: [1, "y"] });
    const b = c.publish("t", new Uint8Array([0, 255]));
    const e = c.publish("t", "s");
    assert.deepEqual(ws.requests(), [
      { type: "publish", topic: "t", data: { x: [1, "y"] }, id: 1 },
      [0x41, 0, 0, 0, 2, 1, 116, 0, 255],
      { type: "publish", topic: "t", data: "s", id: 3 },
    ]);
    ack(ws, 2);
    ack(ws, 1);
    ws.receive(JSON.stringify({ type: "error", id: 3, code: "publish_not_allowed", reason: "read-only" }));
    await a;
    await b;
    await assert.rejects(e, (err) => err instanceof PubsubError && err.code === "publish_not_allowed" && err.message === "read-only");
    await assert.rejects(c.publish("", 1), { code: "bad_topic" });
    await assert.rejects(c.publish("t", undefined), { code: "bad_request" });
    assert.equal(ws.sent.length, 3);
  });

  test("errors without a known id go to onError", () => {
    const errors = [];
    const c = client({ onError: (e) => errors.push(e.code) });
    last().open();
    last().receive(JSON.stringify({ type: "error", code: "malformed_json", reason: "x" }));
    last().receive(JSON.stringify({ type: "error", id: 99, code: "bad_request", reason: "x" }));
    assert.deepEqual(errors, ["malformed_json", "bad_request"]);
    c.close();
  });

  test("unsubscribe: request, 'not subscribed' counts as done, deliveries stop", async () => {
    const c = client();
    const ws = last();
    ws.open();
    const got = [];
    const p = c.subscribe("a", (d) => got.push(d));
    ack(ws, 1);
    await p;
    const u = c.unsubscribe("a");
    assert.deepEqual(ws.requests()[1], { type: "unsubscribe", topic: "a", id: 2 });
    ws.receive(JSON.stringify({ type: "error", id: 2, code: "not_subscribed", reason: "x" }));
    await u;
    ws.receive(JSON.stringify({ type: "message", topic: "a", data: 1 }));
    assert.deepEqual(got, []);
    await c.unsubscribe("never"); // nothing to do, nothing sent
    assert.equal(ws.sent.length, 2);
  });

  test("reconnects with back-off and resubscribes every topic in one batch", async () => {
    const c = client();
    let ws = last();
    ws.open();
    const a = c.subscribe("a", () => {});
    ack(ws, 1);
    await a;
    const b = c.subscribe("b", () => {}); // not acked before the drop
    ws.drop(1006);
    assert.equal(c.state, "reconnecting");
    assert.deepEqual(states.at(-1), ["reconnecting", { attempt: 1, delay: 500, code: 1006, reason: "" }]);
    mock.timers.tick(499);
    assert.equal(FakeWebSocket.all.length, 1);
    mock.timers.tick(1);
    assert.equal(FakeWebSocket.all.length, 2);
    ws = last();
    ws.open();
    assert.deepEqual(ws.requests(), [{ type: "subscribe", topics: ["a", "b"], id: 3 }]);
    let bDone = false;
    b.then(() => (bDone = true));
    await settled();
    assert.equal(bDone, false);
    ack(ws, 3);
    await b; // the first subscribe resolves with the resubscription's ack
    assert.equal(c.state, "open");
  });

  test("back-off doubles from 0.5 s to 10 s with jitter, and resets after a stable connection", () => {
    const c = client();
    const delays = [];
    for (let i = 0; i < 7; i++) {
      last().drop();
      delays.push(states.at(-1)[1].delay);
      mock.timers.tick(states.at(-1)[1].delay);
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
    Math.random.mock.mockImplementation(() => 0);
    last().drop();
    assert.equal(states.at(-1)[1].delay, 5000, "jitter: half the step at least");
    mock.timers.tick(5000);
    // Open for 5 s: the next loss starts from 0.5 s again (0.25 s with random 0).
    last().open();
    mock.timers.tick(5000);
    last().drop();
    assert.equal(states.at(-1)[1].delay, 250);
    c.close();
  });

  test("publishes wait for the connection, across failed attempts; in-flight ones fail on a drop", async () => {
    const c = client();
    let ws = last();
    const queued = c.publish("t", 1); // before the first open
    ws.drop(); // the first attempt fails
    mock.timers.tick(500);
    ws = last();
    ws.open();
    assert.deepEqual(ws.requests(), [{ type: "publish", topic: "t", data: 1, id: 1 }]);
    ack(ws, 1);
    await queued;
    const inFlight = c.publish("t", 2);
    ws.drop();
    await assert.rejects(inFlight, { code: "disconnected" });
  });

  test("close: no reconnect, everything pending rejects, state closed", async () => {
    const c = client();
    const ws = last();
    ws.open();
    const s = c.subscribe("a", () => {});
    const p = c.publish("a", 1);
    c.close();
    assert.equal(ws.closedWith, 1000);
    await assert.rejects(s, { code: "closed" });
    await assert.rejects(p, { code: "closed" });
    ws.open(); // late events of the old socket are ignored
    ws.drop(1000);
    mock.timers.tick(60_000);
    assert.equal(FakeWebSocket.all.length, 1);
    assert.equal(c.state, "closed");
    assert.deepEqual(states.at(-1), ["closed", {}]);
    await assert.rejects(c.publish("a", 1), { code: "closed" });
  });

  test("extensions: the open connection's, empty while none is open", () => {
    const c = client();
    let ws = last();
    ws.extensions = "permessage-deflate";
    assert.equal(c.extensions, "", "not open yet");
    ws.open();
    assert.equal(c.extensions, "permessage-deflate");
    ws.drop();
    assert.equal(c.extensions, "", "reconnecting");
    mock.timers.tick(500);
    ws = last();
    ws.extensions = "";
    ws.open();
    assert.equal(c.extensions, "", "the new connection negotiated none");
    c.close();
    assert.equal(c.extensions, "");
  });

  test("on reconnect: resubscriptions, then queued publishes, then what the open handler sends", async () => {
    const c = client({
      onState: (s) => {
        states.push([s, {}]);
        if (s === "open" && FakeWebSocket.all.length === 2) c.publish("t", "from the handler");
      },
    });
    let ws = last();
    ws.open();
    const s = c.subscribe("a", () => {});
    ack(ws, 1);
    await s;
    ws.drop();
    const queued = c.publish("t", "queued");
    mock.timers.tick(500);
    ws = last();
    ws.open();
    assert.deepEqual(ws.requests(), [
      { type: "subscribe", topic: "a", id: 3 },
      { type: "publish", topic: "t", data: "queued", id: 2 },
      { type: "publish", topic: "t", data: "from the handler", id: 4 },
    ]);
    ack(ws, 2);
    await queued;
    // A subscribe made in the handler waits for the resubscription's ack.
    let resolved = false;
    c.subscribe("a").then(() => (resolved = true));
    await settled();
    assert.equal(resolved, false);
    ack(ws, 3);
    await settled();
    assert.equal(resolved, true);
    assert.equal(ws.sent.length, 3, "no second subscribe for a topic already there");
  });

  test("a failed subscribe rejects and forgets the topic", async () => {
    const c = client();
    const ws = last();
    ws.open();
    const s = c.subscribe("a", () => {});
    ws.receive(JSON.stringify({ type: "error", id: 1, code: "too_many_subscriptions", reason: "max 256" }));
    await assert.rejects(s, { code: "too_many_subscriptions" });
    ws.drop();
    mock.timers.tick(500);
    last().open();
    assert.deepEqual(last().sent, [], "nothing to resubscribe");
  });
});
