// Real-browser test of wsloop's chat page (GET /), with Debian's chromium
// driven by playwright-core. Usage: node test.mjs <path-to-wsloop>
// With TLS_CERT and TLS_KEY (PEM files, e.g. a self-signed pair), the daemon
// serves TLS only and the page runs over https:// and wss:// (Chromium with
// --ignore-certificate-errors, a fresh profile).
//
// Two pages join the same room, see each other (member count 2), exchange
// messages; the daemon is SIGKILLed, both pages say they are reconnecting;
// the daemon restarts on the same address and both pages reconnect by
// themselves and chat again. Every wait is bounded; the whole run is capped.

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
const ROOM = "test room ✓"; // a space and non-ASCII: exercises the URL encoding
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
    d.proc.once("exit", () => { clearTimeout(t); res(); });
    d.proc.kill("SIGKILL");
  });
}

// The daemon must die on every exit path, including ^C and uncaught errors.
process.on("exit", () => { try { daemon?.proc.kill("SIGKILL"); } catch { /* gone */ } });
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    console.log(`interrupted by ${sig}`);
    console.log("browser: 0 passed, 1 failed");
    process.exit(1);
  });
}

// ---- page helpers -----------------------------------------------------------------
async function openChat(context, base, name) {
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  const res = await page.goto(base + "/", { timeout: WAIT });
  if (!res || res.status() !== 200) throw new Error(`GET / answered ${res?.status()}`);
  await page.getByRole("textbox", { name: "Your name" }).fill(name, { timeout: WAIT });
  await page.getByRole("textbox", { name: "Room", exact: true }).fill(ROOM, { timeout: WAIT });
  await page.getByRole("button", { name: "Join room" }).click({ timeout: WAIT });
  page.who = name;
  return page;
}

const waitFor = (page, selector, what) =>
  page.locator(selector).first().waitFor({ state: "visible", timeout: WAIT }).catch((e) => {
    throw new Error(`${page.who}: ${what} (waited ${WAIT} ms for ${selector}): ${e.message.split("\n")[0]}`);
  });

async function expectConnected(page, members) {
  await waitFor(page, '#status[data-state="connected"]', "connected state");
  await page
    .waitForFunction((n) => document.getElementById("members").textContent.trim() === String(n), members, { timeout: WAIT })
    .catch(async () => {
      const shown = await page.locator("#members").textContent();
      throw new Error(`${page.who}: member count ${members} expected, page shows ${JSON.stringify(shown)}`);
    });
}

async function expectReconnecting(page) {
  // The state alternates between "connecting" (a try) and "reconnecting" (the
  // wait before the next one); the countdown text must show up.
  await waitFor(page, '#status[data-state="reconnecting"]', "reconnecting state");
  await page
    .getByText(/reconnecting in [\d.]+ s…/)
    .first()
    .waitFor({ timeout: WAIT })
    .catch(() => { throw new Error(`${page.who}: no "reconnecting in N s…" text`); });
}

async function send(page, text, { viaButton = false } = {}) {
  const box = page.getByRole("textbox", { name: "Message", exact: true });
  await box.fill(text, { timeout: WAIT });
  if (viaButton) await page.getByRole("button", { name: "Send" }).click({ timeout: WAIT });
  else await box.press("Enter", { timeout: WAIT });
  // The sender shows its own message locally (the server does not echo it).
  await page
    .locator("#log li.msg.mine", { hasText: text })
    .waitFor({ timeout: WAIT })
    .catch(() => { throw new Error(`${page.who}: own message "${text}" not shown`); });
}

async function expectMessage(page, from, text) {
  const item = page.locator("#log li.msg:not(.mine)", { hasText: text }).last();
  await item.waitFor({ timeout: WAIT }).catch(() => {
    throw new Error(`${page.who}: message "${text}" from ${from} never shown`);
  });
  const name = (await item.locator(".name").textContent()).trim();
  if (name !== from) throw new Error(`${page.who}: message "${text}" shown as from ${JSON.stringify(name)}, not ${from}`);
  const time = await item.locator("time").getAttribute("datetime");
  if (!time || Number.isNaN(Date.parse(time))) throw new Error(`${page.who}: message "${text}" has no time`);
}

// ---- the test -------------------------------------------------------------------
async function test(browserCtx) {
  const addr = await startDaemon("127.0.0.1:0");
  const base = `${HTTP}://${addr}`;
  log(`wsloop listening on ${addr}`);

  // The page itself: one self-contained HTML document.
  const res = await fetch(base + "/", { signal: AbortSignal.timeout(WAIT) });
  const html = await res.text();
  if (res.status !== 200) throw new Error(`GET / answered ${res.status}`);
  if (!/^text\/html/.test(res.headers.get("content-type") ?? "")) throw new Error(`GET / content-type ${res.headers.get("content-type")}`);
  if (/<script[^>]+src=|<link[^>]+stylesheet/i.test(html)) throw new Error("the page loads external resources");
  log(`ok - GET / serves the self-contained chat page over ${HTTP}://`);

  const alice = await openChat(browserCtx, base, "Alice");
  await expectConnected(alice, 1);
  const bob = await openChat(browserCtx, base, "Bob");
  await expectConnected(bob, 2);
  await expectConnected(alice, 2);
  const pageUrl = new URL(alice.url());
  if (pageUrl.protocol !== `${HTTP}:`) throw new Error(`the page was served over ${pageUrl.protocol}`);
  await waitFor(alice, '#log li.notice:has-text("Bob joined (2 online)")', "Bob's join notice");
  log("ok - both pages connected, member count 2, join notice shown");

  await send(alice, "Hello from Alice. Grüße!");
  await expectMessage(bob, "Alice", "Hello from Alice. Grüße!");
  await send(bob, "Hi Alice! Line one\nline two", { viaButton: true });
  await expectMessage(alice, "Bob", "Hi Alice! Line one");
  await send(alice, "Shall we test a restart of the server?");
  await expectMessage(bob, "Alice", "Shall we test a restart of the server?");
  log("ok - messages exchanged both ways, with sender name and time");

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await alice.screenshot({ path: SCREENSHOT, timeout: WAIT });
  log(`ok - screenshot saved to ${SCREENSHOT}`);

  await killDaemon();
  log("wsloop killed (SIGKILL)");
  await Promise.all([expectReconnecting(alice), expectReconnecting(bob)]);
  for (const p of [alice, bob]) {
    const shown = (await p.locator("#members").textContent()).trim();
    if (shown === "2") throw new Error(`${p.who}: still shows 2 members while disconnected`);
    if (!(await p.getByRole("button", { name: "Send" }).isDisabled())) throw new Error(`${p.who}: Send enabled while disconnected`);
  }
  log("ok - both pages show they are disconnected and reconnecting");

  // Stay down a while, so the pages' first retries fail and back off.
  await new Promise((r) => setTimeout(r, 2000));

  // Same address: the pages must find the new daemon by themselves.
  let again = null;
  for (let i = 0; !again; i++) {
    try {
      again = await startDaemon(addr);
    } catch (e) {
      if (i >= 20) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  log(`wsloop restarted on ${again}`);
  await Promise.all([expectConnected(alice, 2), expectConnected(bob, 2)]);
  for (const p of [alice, bob]) {
    await waitFor(p, '#log li.notice:has-text("Reconnected.")', "a Reconnected notice");
    const lost = await p.locator("#log li.notice", { hasText: "Connection lost" }).count();
    if (lost !== 1) throw new Error(`${p.who}: ${lost} "Connection lost" notices for one outage`);
  }
  log("ok - both pages reconnected by themselves, member count 2");

  await send(bob, "Back again?");
  await expectMessage(alice, "Bob", "Back again?");
  await send(alice, "Yes, reconnected.");
  await expectMessage(bob, "Alice", "Yes, reconnected.");
  log("ok - messages exchanged after the reconnect");

  // Another kind of client in the room: non-JSON text must not break the page.
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
          ws.send(JSON.stringify({ type: "chat", name: "<b>html</b>", text: "<img src=x onerror=alert(1)>", ts: Date.now() }));
          setTimeout(() => { clearTimeout(t); ws.close(); res(); }, 200);
        };
        ws.onerror = () => rej(new Error("raw client error"));
      }),
    { url: `${WS}://${addr}/broadcast/${encodeURIComponent(ROOM)}`, wait: WAIT },
  );
  await waitFor(bob, '#log li.raw:has-text("plain text, not JSON")', "raw text message");
  await expectMessage(bob, "<b>html</b>", "<img src=x onerror=alert(1)>");
  if ((await bob.locator("#log img, #log b").count()) !== 0) throw new Error("Bob: message markup was rendered as HTML");
  await waitFor(bob, '#status[data-state="connected"]', "connected state after odd messages");
  log("ok - foreign messages shown as text, markup not interpreted, page still connected");

  // Presence: a member leaving (tab closed) is announced with the new count.
  const bobErrors = bob.errors;
  await bob.close();
  await waitFor(alice, '#log li.notice:has-text("Bob left (1 online)")', "Bob's leave notice");
  await expectConnected(alice, 1);
  log("ok - a member closing the page is announced as left, member count 1");

  for (const p of [alice, { who: "Bob", errors: bobErrors }]) {
    if (p.errors.length) throw new Error(`${p.who}: uncaught page errors: ${p.errors.join("; ")}`);
  }
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
