// Real-browser test of wsloop's chat page (GET /) and its client module
// (GET /wsloop.js), with Debian's chromium driven by playwright-core.
// Usage: node test.mjs <path-to-wsloop>
// With TLS_CERT and TLS_KEY (PEM files, e.g. a self-signed pair), the daemon
// serves TLS only and the page runs over https:// and wss:// (Chromium with
// --ignore-certificate-errors, a fresh profile).
//
// Alice joins rooms A and B, Bob rooms A and C (one /pubsub connection each,
// permessage-deflate negotiated); they chat in every room, a backend
// publishes to all three at once (POST /pubsub), and each page must show
// exactly the messages of its own rooms, with unread counts on the tabs it
// is not looking at. The daemon is SIGKILLed: both pages say they are
// reconnecting; it restarts on the same address and both pages reconnect
// and resubscribe every room by themselves (messages flow in all of them).
// A plain /broadcast member then sends text, HTML and binary: shown as text.
// Leaving a room unsubscribes it; closing a page is seen as a leave.
// Every wait is bounded; the whole run is capped.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = resolve(process.argv[2] ?? join(HERE, "../../target/release/wsloop"));
const SCREENSHOT = resolve(process.env.SCREENSHOT ?? join(HERE, "../../docs/screenshot.png"));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const WAIT = 10_000; // every single wait
const TOTAL = 55_000; // the whole test
const A = "test room ✓"; // shared; a space and non-ASCII exercise the encodings
const B = "lobby"; // Alice only
const C = "ops"; // Bob only
const TLS = process.env.TLS_CERT && process.env.TLS_KEY ? ["--tls-cert", process.env.TLS_CERT, "--tls-key", process.env.TLS_KEY] : [];
const HTTP = TLS.length ? "https" : "http";
const WS = TLS.length ? "wss" : "ws";
if (TLS.length) {
  // The self-signed certificate, for this script's own fetch only.
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
}

const started = Date.now();
const secs = () => ((Date.now() - started) / 1000).toFixed(1);
const log = (msg) => console.log(`[${secs()}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(ok, what) {
  if (!ok) throw new Error(what);
}

// ---- the daemon ---------------------------------------------------------------
let daemon = null; // { proc, stderr: string[] }

function startDaemon(listen) {
  return new Promise((resolveStart, rejectStart) => {
    const proc = spawn(BIN, ["--listen", listen, ...TLS], {
      env: { ...process.env, RUST_LOG: "info" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    const d = { proc, stderr: [] };
    daemon = d;
    let buf = "";
    let done = false;
    const finish = (err, addr) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      err ? rejectStart(err) : resolveStart(addr);
    };
    const timer = setTimeout(() => finish(new Error(`wsloop did not report its address within ${WAIT} ms`)), WAIT);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        d.stderr.push(line);
        if (d.stderr.length > 200) d.stderr.shift();
        const m = /listening on (\d+\.\d+\.\d+\.\d+:\d+)/.exec(line);
        if (m) finish(null, m[1]);
      }
    });
    proc.on("error", (e) => finish(new Error(`cannot start ${BIN}: ${e.message}`)));
    proc.on("exit", (code, sig) => finish(new Error(`wsloop exited (${sig ?? code}) before listening:\n${d.stderr.join("\n")}`)));
  });
}

function killDaemon() {
  const d = daemon;
  if (!d || d.proc.exitCode !== null || d.proc.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const t = setTimeout(res, WAIT);
    d.proc.once("exit", () => {
      clearTimeout(t);
      res();
    });
    d.proc.kill("SIGKILL");
  });
}

// The daemon must die on every exit path, including ^C and uncaught errors.
process.on("exit", () => {
  try {
    daemon?.proc.kill("SIGKILL");
  } catch {
    /* gone */
  }
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    console.log(`interrupted by ${sig}`);
    console.log("browser: 0 passed, 1 failed");
    process.exit(1);
  });
}

/** A backend publishing over HTTP: POST /pubsub with a batch. */
async function publishBatch(base, items) {
  const body = items.map(([topic, text]) => ({
    type: "publish",
    topic,
    data: { type: "chat", name: "Backend", text, ts: Date.now() },
  }));
  const res = await fetch(base + "/pubsub", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT),
  });
  const answer = await res.text();
  check(res.status === 202 || res.status === 200, `POST /pubsub answered ${res.status}: ${answer}`);
  return JSON.parse(answer);
}

// ---- page helpers -----------------------------------------------------------------
const bounded = (promise, what) =>
  promise.catch((e) => {
    throw new Error(`${what} (waited ${WAIT} ms): ${e.message.split("\n")[0]}`);
  });

const tabOf = (page, room) => page.locator(".tab").filter({ has: page.locator(".tab-name", { hasText: room }) });
const logOf = (page, room) => page.locator(`ol.log[data-room="${room}"]`);

async function openChat(context, base, name) {
  const page = await context.newPage();
  page.who = name;
  page.errors = [];
  page.requests = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("request", (r) => page.requests.push(r.url()));
  const res = await page.goto(base + "/", { timeout: WAIT });
  check(res && res.status() === 200, `GET / answered ${res?.status()}`);
  await page.getByRole("textbox", { name: "Your name" }).fill(name, { timeout: WAIT });
  return page;
}

/** Joins `room` with the form; waits until both its topics are subscribed. */
async function joinRoom(page, room) {
  await page.getByRole("textbox", { name: "Room", exact: true }).fill(room, { timeout: WAIT });
  await page.getByRole("button", { name: "Join room" }).click({ timeout: WAIT });
  await expectLive(page, room);
  await bounded(
    logOf(page, room).locator("li.notice", { hasText: `You joined “${room}”.` }).waitFor({ timeout: WAIT }),
    `${page.who}: no join notice in ${room}`,
  );
}

const expectLive = (page, room) =>
  bounded(
    tabOf(page, room).and(page.locator('[data-live="true"]')).waitFor({ timeout: WAIT }),
    `${page.who}: room ${room} not live`,
  );

/** Shows `room` by clicking its tab. */
async function show(page, room) {
  const tab = tabOf(page, room);
  await tab.click({ timeout: WAIT });
  await bounded(page.locator('.tab[aria-selected="true"]').filter({ hasText: room }).waitFor({ timeout: WAIT }), `${page.who}: tab ${room} not selected`);
  check(await logOf(page, room).isVisible(), `${page.who}: the log of ${room} is not visible on its tab`);
}

async function expectMembers(page, room, n) {
  const shown = () => page.locator("#members").textContent();
  await bounded(
    page.waitForFunction(
      ([r, n]) => document.getElementById("room-label").textContent === r && document.getElementById("members").textContent === String(n),
      [room, n],
      { timeout: WAIT },
    ),
    `${page.who}: member count ${n} expected in ${room}, page shows ${JSON.stringify(await shown())}`,
  );
}

async function send(page, room, text, { viaButton = false } = {}) {
  await show(page, room);
  const box = page.getByRole("textbox", { name: "Message", exact: true });
  await box.fill(text, { timeout: WAIT });
  if (viaButton) await page.getByRole("button", { name: "Send" }).click({ timeout: WAIT });
  else await box.press("Enter", { timeout: WAIT });
  // Shown at once (the server does not echo it), then marked sent on the ack.
  await bounded(
    logOf(page, room).locator('li.msg.mine[data-status="sent"]', { hasText: text }).waitFor({ timeout: WAIT }),
    `${page.who}: own message "${text}" not shown as sent in ${room}`,
  );
}

async function expectMessage(page, room, from, text) {
  const item = logOf(page, room).locator("li.msg:not(.mine)", { hasText: text }).last();
  await bounded(item.waitFor({ state: "attached", timeout: WAIT }), `${page.who}: message "${text}" from ${from} never shown in ${room}`);
  const name = (await item.locator(".name").textContent()).trim();
  check(name === from, `${page.who}: message "${text}" shown as from ${JSON.stringify(name)}, not ${from}`);
  const time = await item.locator("time").getAttribute("datetime");
  check(time && !Number.isNaN(Date.parse(time)), `${page.who}: message "${text}" has no time`);
}

async function expectUnread(page, room, n) {
  const badge = tabOf(page, room).locator(".badge");
  if (n === 0) {
    await bounded(badge.waitFor({ state: "hidden", timeout: WAIT }), `${page.who}: unread badge still on ${room}`);
    return;
  }
  await bounded(
    badge.filter({ hasText: new RegExp(`^${n} unread$`) }).waitFor({ timeout: WAIT }),
    `${page.who}: unread ${n} expected on ${room}, shows ${JSON.stringify(await badge.textContent())}`,
  );
}

/** Every room's log on the page: room -> the texts of its messages, in order. */
const messagesByRoom = (page) =>
  page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll("ol.log")].map((l) => [l.dataset.room, [...l.querySelectorAll("li.msg .text")].map((t) => t.textContent)]),
    ),
  );

async function expectExactly(page, want) {
  const got = await messagesByRoom(page);
  const show = JSON.stringify;
  check(show(Object.keys(got).sort()) === show(Object.keys(want).sort()), `${page.who}: rooms ${show(Object.keys(got))}, expected ${show(Object.keys(want))}`);
  for (const [room, texts] of Object.entries(want)) {
    check(show(got[room]) === show(texts), `${page.who}: ${room} shows ${show(got[room])}, expected ${show(texts)}`);
  }
}

async function expectReconnecting(page) {
  // "reconnecting" covers both the wait before a try (a countdown) and the try.
  await bounded(page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: WAIT }), `${page.who}: no reconnecting state`);
  await bounded(page.getByText(/reconnecting in [\d.]+ s…/).first().waitFor({ timeout: WAIT }), `${page.who}: no "reconnecting in N s…" text`);
}

// ---- the test -------------------------------------------------------------------
async function checkServedFiles(base) {
  const res = await fetch(base + "/", { signal: AbortSignal.timeout(WAIT) });
  const html = await res.text();
  check(res.status === 200, `GET / answered ${res.status}`);
  check(/^text\/html/.test(res.headers.get("content-type") ?? ""), `GET / content-type ${res.headers.get("content-type")}`);
  check(!/(src|href)=["']?(https?:)?\/\//i.test(html) && !/from\s+["'](https?:)?\/\//.test(html), "the page refers to another site");
  check(html.includes('import("/wsloop.js")'), "the page does not load /wsloop.js");
  const js = await fetch(base + "/wsloop.js", { signal: AbortSignal.timeout(WAIT) });
  const src = await js.text();
  check(js.status === 200 && /javascript/.test(js.headers.get("content-type") ?? ""), `GET /wsloop.js: ${js.status} ${js.headers.get("content-type")}`);
  check(/export function connect/.test(src) && !/^\s*import\s/m.test(src), "/wsloop.js is not the dependency-free client module");
  log(`ok - GET / and GET /wsloop.js served over ${HTTP}://`);
}

async function joinAndChat(context, base) {
  const alice = await openChat(context, base, "Alice");
  await joinRoom(alice, A);
  await expectMembers(alice, A, 1);
  await joinRoom(alice, B);
  const bob = await openChat(context, base, "Bob");
  await joinRoom(bob, A);
  await joinRoom(bob, C);
  check((await alice.locator(".tab").count()) === 2 && (await bob.locator(".tab").count()) === 2, "two tabs each");
  await show(alice, A);
  await expectMembers(alice, A, 2);
  await bounded(logOf(alice, A).locator("li.notice", { hasText: "Bob joined (2 online)." }).waitFor({ timeout: WAIT }), "Alice: no join notice for Bob");
  await show(bob, A);
  await expectMembers(bob, A, 2);
  const inB = (await alice.evaluate(() => window.__wsloop.rooms)).find((r) => r.name === B);
  check(inB?.live && inB.members === 1, `Alice: room ${B} ${JSON.stringify(inB)}, live with 1 member expected`);
  log("ok - Alice in A and B, Bob in A and C, both live; 2 members in A, Bob's join announced");

  for (const p of [alice, bob]) {
    const ext = await p.evaluate(() => window.__wsloop.extensions);
    check(/permessage-deflate/.test(ext), `${p.who}: extensions ${JSON.stringify(ext)}, permessage-deflate expected`);
    const urls = new Set(p.requests.map((u) => new URL(u).origin));
    check(urls.size === 1 && urls.has(new URL(base).origin), `${p.who}: requests outside the server: ${[...urls]}`);
  }
  log("ok - permessage-deflate negotiated (ws.extensions), nothing loaded from elsewhere");

  await send(alice, B, "B1 from Alice");
  await send(bob, C, "C1 from Bob", { viaButton: true });
  await send(alice, A, "A1 from Alice. Grüße!");
  await expectMessage(bob, A, "Alice", "A1 from Alice. Grüße!");
  await expectUnread(bob, A, 1); // Bob was looking at C
  await show(bob, A);
  await expectUnread(bob, A, 0);
  await send(bob, A, "A2 from Bob: line one\nline two");
  await expectMessage(alice, A, "Bob", "A2 from Bob: line one");
  const sent = await publishBatch(base, [[A, "batch to A"], [B, "batch to B"], [C, "batch to C"]]);
  check(sent.published === 3 && sent.recipients === 4, `POST /pubsub: ${JSON.stringify(sent)}, expected 3 published to 4 subscribers`);
  await expectMessage(alice, A, "Backend", "batch to A");
  await expectMessage(alice, B, "Backend", "batch to B");
  await expectMessage(bob, C, "Backend", "batch to C");
  await expectUnread(alice, B, 1);
  await expectUnread(bob, C, 1);
  await expectExactly(alice, {
    [A]: ["A1 from Alice. Grüße!", "A2 from Bob: line one\nline two", "batch to A"],
    [B]: ["B1 from Alice", "batch to B"],
  });
  await expectExactly(bob, {
    [A]: ["A1 from Alice. Grüße!", "A2 from Bob: line one\nline two", "batch to A"],
    [C]: ["C1 from Bob", "batch to C"],
  });
  log("ok - messages in every room; each page shows exactly its rooms' messages; unread counts on the other tabs");

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await alice.screenshot({ path: SCREENSHOT, timeout: WAIT });
  log(`ok - screenshot saved to ${SCREENSHOT}`);
  return { alice, bob };
}

async function restart(addr, base, { alice, bob }) {
  await killDaemon();
  log("wsloop killed (SIGKILL)");
  await Promise.all([expectReconnecting(alice), expectReconnecting(bob)]);
  for (const p of [alice, bob]) {
    check((await p.locator("#members").textContent()).trim() === "–", `${p.who}: shows a member count while disconnected`);
    check(await p.getByRole("button", { name: "Send" }).isDisabled(), `${p.who}: Send enabled while disconnected`);
    check((await p.locator('.tab[data-live="true"]').count()) === 0, `${p.who}: a room still marked live`);
  }
  log("ok - both pages show they are disconnected and reconnecting");

  // Stay down a while, so the pages' first retries fail and back off.
  await sleep(2000);
  let again = null;
  for (let i = 0; !again; i++) {
    try {
      again = await startDaemon(addr); // same address: the pages must find it by themselves
    } catch (e) {
      if (i >= 20) throw e;
      await sleep(100);
    }
  }
  log(`wsloop restarted on ${again}`);
  for (const [p, rooms] of [[alice, [A, B]], [bob, [A, C]]]) {
    await bounded(p.locator('#status[data-state="connected"]').waitFor({ timeout: WAIT }), `${p.who}: not connected again`);
    for (const room of rooms) {
      await expectLive(p, room);
      await bounded(logOf(p, room).locator("li.notice", { hasText: "Reconnected." }).waitFor({ state: "attached", timeout: WAIT }), `${p.who}: no Reconnected notice in ${room}`);
      const lost = await logOf(p, room).locator("li.notice", { hasText: "Connection lost" }).count();
      check(lost === 1, `${p.who}: ${lost} "Connection lost" notices in ${room} for one outage`);
    }
    check(/permessage-deflate/.test(await p.evaluate(() => window.__wsloop.extensions)), `${p.who}: no permessage-deflate after the reconnect`);
  }
  await Promise.all([expectMembers(alice, A, 2), expectMembers(bob, A, 2)]);
  log("ok - both pages reconnected and resubscribed every room by themselves; 2 members in A");

  await send(bob, A, "A3 from Bob, back again?");
  await expectMessage(alice, A, "Bob", "A3 from Bob, back again?");
  const sent = await publishBatch(base, [A, B, C].map((r) => [r, `after the restart to ${r}`]));
  check(sent.recipients === 4, `POST /pubsub after the restart: ${JSON.stringify(sent)}, expected 4 subscribers`);
  for (const [p, room] of [[alice, A], [alice, B], [bob, A], [bob, C]]) {
    await expectMessage(p, room, "Backend", `after the restart to ${room}`);
  }
  log("ok - messages flow again in every room of both pages");
}

async function foreignMessages(addr, { alice, bob }) {
  // A plain room member (no envelope) in A: text, JSON of other shapes,
  // binary and markup must show as text and not break the page.
  await alice.evaluate(
    ({ url, wait }) =>
      new Promise((res, rej) => {
        const ws = new WebSocket(url);
        const t = setTimeout(() => rej(new Error("raw client did not open")), wait);
        ws.onopen = () => {
          ws.send("plain text, not JSON");
          ws.send('{"type":"chat","name":"NoText"}');
          ws.send("[1,2,3]");
          ws.send(new Uint8Array([1, 2, 3]));
          ws.send('<img src=x onerror="window.__xss=1"><b>bold?</b>');
          ws.send(JSON.stringify({ type: "chat", name: "<b>html</b>", text: "<img src=x onerror=window.__xss=2>", ts: Date.now() }));
          setTimeout(() => {
            clearTimeout(t);
            ws.close();
            res();
          }, 200);
        };
        ws.onerror = () => rej(new Error("raw client error"));
      }),
    { url: `${WS}://${addr}/broadcast/${encodeURIComponent(A)}`, wait: WAIT },
  );
  const raw = logOf(bob, A).locator("li.raw");
  for (const text of ["plain text, not JSON", '{"type":"chat","name":"NoText"}', "[1,2,3]", "01 02 03", '<img src=x onerror="window.__xss=1"><b>bold?</b>']) {
    await bounded(raw.filter({ hasText: text }).first().waitFor({ timeout: WAIT }), `Bob: foreign message ${text} not shown as text`);
  }
  await bounded(raw.filter({ hasText: "(binary message, 3 bytes)" }).waitFor({ timeout: WAIT }), "Bob: binary message not labelled");
  await expectMessage(bob, A, "<b>html</b>", "<img src=x onerror=window.__xss=2>");
  for (const p of [alice, bob]) {
    check((await p.locator(".log img, .log b").count()) === 0, `${p.who}: message markup was rendered as HTML`);
    check((await p.evaluate(() => window.__xss)) === undefined, `${p.who}: message markup ran a script`);
    await bounded(p.locator('#status[data-state="connected"]').waitFor({ timeout: WAIT }), `${p.who}: not connected after odd messages`);
  }
  log("ok - foreign messages (text, other JSON, binary, markup) shown as text, nothing interpreted");
}

async function leaving(base, { alice, bob }) {
  // Keyboard: from A's tab, ArrowRight shows B.
  await tabOf(alice, A).focus();
  await alice.keyboard.press("ArrowRight");
  await bounded(alice.locator('.tab[aria-selected="true"]').filter({ hasText: B }).waitFor({ timeout: WAIT }), "Alice: ArrowRight did not select B");
  check(await tabOf(alice, B).evaluate((t) => t === document.activeElement), "Alice: focus did not follow to B's tab");
  await alice.getByRole("button", { name: "Leave room" }).click({ timeout: WAIT });
  await bounded(tabOf(alice, B).waitFor({ state: "detached", timeout: WAIT }), "Alice: B's tab still there after leaving");
  await bounded(alice.locator('.tab[aria-selected="true"]').filter({ hasText: A }).waitFor({ timeout: WAIT }), "Alice: A not shown after leaving B");
  const res = await fetch(`${base}/broadcast/${B}`, { method: "POST", body: "anyone?", signal: AbortSignal.timeout(WAIT) });
  const answer = await res.json();
  check(answer.recipients === 0, `POST /broadcast/${B} after leaving: ${JSON.stringify(answer)}`);
  log("ok - arrow keys switch rooms; leaving a room unsubscribes it (0 recipients)");

  const bobErrors = bob.errors;
  await bob.close();
  await bounded(logOf(alice, A).locator("li.notice", { hasText: "Bob left (1 online)." }).waitFor({ timeout: WAIT }), "Alice: no leave notice for Bob");
  await expectMembers(alice, A, 1);
  log("ok - a member closing the page is announced as left, member count 1");
  for (const p of [alice, { who: "Bob", errors: bobErrors }]) {
    check(p.errors.length === 0, `${p.who}: uncaught page errors: ${p.errors.join("; ")}`);
  }
}

async function test(context) {
  const addr = await startDaemon("127.0.0.1:0");
  const base = `${HTTP}://${addr}`;
  log(`wsloop listening on ${addr}`);
  await checkServedFiles(base);
  const pages = await joinAndChat(context, base);
  await restart(addr, base, pages);
  await foreignMessages(addr, pages);
  await leaving(base, pages);
}

async function main() {
  const watchdog = setTimeout(() => {
    console.log(`not ok - the whole test took over ${TOTAL / 1000} s`);
    console.log("browser: 0 passed, 1 failed");
    process.exit(1); // the exit handler kills the daemon
  }, TOTAL);

  const profile = mkdtempSync(join(tmpdir(), "wsloop-chromium-"));
  let context = null;
  let ok = false;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 900, height: 700 },
      timeout: WAIT * 2,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        ...(TLS.length ? ["--ignore-certificate-errors"] : []),
      ],
    });
    // A persistent context opens with one blank page: close it.
    for (const p of context.pages()) await p.close();
    await test(context);
    ok = true;
  } catch (e) {
    console.log(`not ok - ${e.message}`);
    if (daemon?.stderr.length) console.log("wsloop stderr (last lines):\n  " + daemon.stderr.slice(-20).join("\n  "));
  } finally {
    await killDaemon();
    await context?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
  log("done");
  console.log(`browser: ${ok ? 1 : 0} passed, ${ok ? 0 : 1} failed`);
  process.exit(ok ? 0 : 1);
}

main();
