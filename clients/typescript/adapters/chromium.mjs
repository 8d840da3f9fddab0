#!/usr/bin/env node
// The client adapter of @runwire/client in a real browser (docs/client-adapter.md): starts
// a headless Chromium on a page that runs the client against RUNWIRE_URL, and relays the
// page's lines to stdout. The browser is driven over the DevTools protocol (CDP), with
// the `ws` package; build the package first (`npm run build`).
//
// The browser dies with the adapter, also when the adapter is killed with SIGKILL: it runs
// in its own process group under a tiny shell supervisor that reads the adapter's pipe and
// kills the whole group once the pipe closes, which happens however the adapter ends.
//
// Profile `browser`: Chromium fails a connection by itself on a text frame that is not
// valid UTF-8 (the page sees 1006), so the client cannot answer it with 4000 (RW-CLOSE-10).
//
// Settings beyond the contract: RUNWIRE_CHROMIUM (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { ConfigError, parseRuns } from "./contract.mjs";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const out = (text) => writeSync(1, text + "\n");
const log = (text) => writeSync(2, `chromium adapter: ${text}\n`);

// Check the settings here, so that a bad one exits 2 before a browser starts.
try {
  if ((process.env.RUNWIRE_URL ?? "").trim() === "") throw new ConfigError("RUNWIRE_URL is required");
  parseRuns(process.env.RUNWIRE_RUNS);
} catch (e) {
  if (e instanceof ConfigError) {
    log(e.message);
    process.exit(2);
  }
  throw e;
}
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("RUNWIRE_")));

// -- the page and the files it loads, from a server on a free local port ---------------

const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".map": "application/json", ".html": "text/html" };
const PAGE = `<!doctype html><meta charset="utf-8"><title>runwire adapter</title>
<script type="module">
import { runAdapter } from "/adapters/contract.mjs";
const env = ${JSON.stringify(env).replace(/</g, "\\u003c")};
let written = 0;
const acks = new Map();
window.__rwAck = (n) => { for (const [k, r] of acks) if (k <= n) { acks.delete(k); r(); } };
const out = (obj) => { written += 1; window.__rwOut(JSON.stringify(obj)); };
// A state line must reach stdout before the client waits or connects: the runner times
// the reconnect delay from it.
const stateBarrier = () => new Promise((r) => acks.set(written, r));
runAdapter({ env, WebSocket, out, log: (t) => window.__rwLog(t), stateBarrier })
  .then((code) => window.__rwExit(String(code)), (e) => { window.__rwLog("crashed: " + (e && e.stack || e)); window.__rwExit("3"); });
</script>`;

const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
  if (path === "/page.html") {
    res.writeHead(200, { "content-type": "text/html", "cache-control": "no-store" });
    return res.end(PAGE);
  }
  const file = normalize(join(ROOT, path));
  const allowed = [join(ROOT, "dist") + sep, join(ROOT, "adapters") + sep].some((d) => file.startsWith(d));
  try {
    if (!allowed) throw new Error("not served");
    const body = readFileSync(file);
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const pageUrl = `http://127.0.0.1:${server.address().port}/page.html`;

// -- the browser, under its supervisor ------------------------------------------------

const profile = mkdtempSync(join(tmpdir(), "runwire-chromium-"));
const args = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-extensions",
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
  "--remote-debugging-port=0",
  `--user-data-dir=${profile}`,
  "about:blank",
];
// The supervisor: Chromium in the background in a session and process group of its own
// (`setsid`, whose pid is the group's id), then wait for our pipe to close (we ended,
// however), kill that group, browser children included, and remove the profile.
const SUPERVISOR = 'dir=$1; shift; setsid "$@" </dev/null & pid=$!; cat >/dev/null; kill -KILL -$pid; wait; rm -rf "$dir"';
const sup = spawn("sh", ["-c", SUPERVISOR, "sh", profile, process.env.RUNWIRE_CHROMIUM || "/usr/bin/chromium", ...args], {
  detached: true,
  stdio: ["pipe", "ignore", "pipe"],
});
const supExited = new Promise((r) => sup.once("exit", r));

let ending = false;
async function end(code) {
  if (ending) return;
  ending = true;
  sup.stdin.end(); // the supervisor kills the browser's group
  server.close();
  await Promise.race([supExited, new Promise((r) => setTimeout(r, 2000))]);
  process.exit(code);
}
process.on("SIGTERM", () => void end(143));
process.on("SIGINT", () => void end(130));
sup.on("exit", () => {
  if (!ending) {
    log("the browser exited");
    void end(3);
  }
});

const endpoint = await new Promise((resolve, reject) => {
  let buf = "";
  const timer = setTimeout(() => reject(new Error(`no DevTools endpoint from the browser: ${buf.slice(-2000)}`)), 30_000);
  sup.stderr.on("data", (chunk) => {
    buf += chunk;
    const m = /DevTools listening on (ws:\/\/\S+)/.exec(buf);
    if (m) {
      clearTimeout(timer);
      resolve(m[1]);
    }
  });
}).catch((e) => {
  log(e.message);
  return end(3);
});
sup.stderr.resume();

// -- the DevTools protocol ---------------------------------------------------------------

const cdp = new WebSocket(endpoint, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
await new Promise((r, j) => {
  cdp.once("open", r);
  cdp.once("error", j);
});
let nextId = 1;
const pending = new Map();
let sessionId;
const call = (method, params = {}, session = sessionId) =>
  new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    cdp.send(JSON.stringify({ id, method, params, ...(session ? { sessionId: session } : {}) }));
  });
let lines = 0;
cdp.on("message", (raw) => {
  const msg = JSON.parse(raw.toString());
  if (msg.id !== undefined) {
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error) p?.reject(new Error(msg.error.message));
    else p?.resolve(msg.result);
    return;
  }
  if (msg.method === "Runtime.bindingCalled") {
    const { name, payload } = msg.params;
    if (name === "__rwOut") {
      out(payload);
      lines += 1;
      // Acknowledge at once: the page waits for this after a state line.
      void call("Runtime.evaluate", { expression: `window.__rwAck(${lines})` }).catch(() => {});
    } else if (name === "__rwLog") {
      log(payload);
    } else if (name === "__rwExit") {
      void end(Number(payload));
    }
  } else if (msg.method === "Runtime.exceptionThrown") {
    log(`page exception: ${JSON.stringify(msg.params.exceptionDetails).slice(0, 2000)}`);
  } else if (msg.method === "Runtime.consoleAPICalled") {
    log(`console.${msg.params.type}: ${msg.params.args.map((a) => a.value ?? a.description).join(" ")}`);
  }
});
cdp.on("close", () => {
  if (!ending) {
    log("the DevTools connection closed");
    void end(3);
  }
});

const { targetId } = await call("Target.createTarget", { url: "about:blank" }, undefined);
({ sessionId } = await call("Target.attachToTarget", { targetId, flatten: true }, undefined));
await call("Runtime.enable");
for (const name of ["__rwOut", "__rwLog", "__rwExit"]) await call("Runtime.addBinding", { name });
await call("Page.enable");
await call("Page.navigate", { url: pageUrl });
