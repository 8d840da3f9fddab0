// Headless Chromium for the adapter and the benchmark of @runwire/client: serves a page
// (and the package's dist/, adapters/ and bench/ files) from a free local port, starts
// the browser on it and relays the page's binding calls, over the DevTools protocol (CDP)
// with the `ws` package.
//
// The browser dies with this process, also when it is killed with SIGKILL: it runs in a
// session and process group of its own (`setsid`) under a tiny shell supervisor that
// reads our pipe and, once the pipe closes (which happens however we end), kills that
// group, browser children included, and removes the browser's profile directory.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".map": "application/json", ".html": "text/html" };
const SERVED = ["dist", "adapters", "bench"].map((d) => join(ROOT, d) + sep);

const ARGS = [
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
];
const SUPERVISOR = 'dir=$1; shift; setsid "$@" </dev/null & pid=$!; cat >/dev/null; kill -KILL -$pid; wait; rm -rf "$dir"';

/**
 * Starts the browser on `html` (served as /page.html) and calls `bindings[name](payload)`
 * for every `window[name](payload)` of the page, with `ctl` as a second argument.
 * `log` gets the page's console and exceptions. Returns `ctl`: `{ evaluate(expression),
 * call(method, params) (a CDP command to the page), end(code) }`; `end` stops the browser and exits the process with `code`. Exits 3 when
 * the browser goes away by itself.
 */
export async function openPage({ html, bindings, log }) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    if (path === "/page.html") {
      res.writeHead(200, { "content-type": "text/html", "cache-control": "no-store" });
      return res.end(html);
    }
    const file = normalize(join(ROOT, path));
    try {
      if (!SERVED.some((d) => file.startsWith(d))) throw new Error("not served");
      const body = readFileSync(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const pageUrl = `http://127.0.0.1:${server.address().port}/page.html`;

  const profile = mkdtempSync(join(tmpdir(), "runwire-chromium-"));
  log(`browser profile ${profile}`);
  const exe = process.env.RUNWIRE_CHROMIUM || "/usr/bin/chromium";
  const sup = spawn("sh", ["-c", SUPERVISOR, "sh", profile, exe, ...ARGS, `--user-data-dir=${profile}`, "about:blank"], {
    detached: true,
    stdio: ["pipe", "ignore", "pipe"],
  });
  const supExited = new Promise((r) => sup.once("exit", r));
  let ending = false;
  const end = async (code) => {
    if (ending) return;
    ending = true;
    sup.stdin.end(); // the supervisor kills the browser's group and removes the profile
    server.close();
    await Promise.race([supExited, new Promise((r) => setTimeout(r, 2000))]);
    process.exit(code);
  };
  process.on("SIGTERM", () => void end(143));
  process.on("SIGINT", () => void end(130));
  sup.on("exit", () => {
    if (!ending) {
      log("the browser exited");
      void end(3);
    }
  });

  let stderr = "";
  const endpoint = await new Promise((resolve) => {
    const timer = setTimeout(() => {
      log(`no DevTools endpoint from ${exe} within 30 s: ${stderr.slice(-2000)}`);
      void end(3);
    }, 30_000);
    sup.stderr.on("data", (chunk) => {
      if (stderr.length < 100_000) stderr += chunk;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });

  const cdp = new WebSocket(endpoint, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
  await new Promise((r, j) => {
    cdp.once("open", r);
    cdp.once("error", j);
  });
  let nextId = 1;
  const pending = new Map();
  let sessionId;
  const ctl = { evaluate: (expression) => call("Runtime.evaluate", { expression }), call: (method, params) => call(method, params), end };
  const call = (method, params = {}, session = sessionId) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      cdp.send(JSON.stringify({ id, method, params, ...(session ? { sessionId: session } : {}) }));
    });
  cdp.on("message", (raw) => {
    const msg = JSON.parse(raw.toString());
    if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(msg.error.message));
      else p?.resolve(msg.result);
    } else if (msg.method === "Runtime.bindingCalled") {
      bindings[msg.params.name]?.(msg.params.payload, ctl);
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
  for (const name of Object.keys(bindings)) await call("Runtime.addBinding", { name });
  await call("Page.navigate", { url: pageUrl });
  return ctl;
}

/** Writes one line to a file descriptor at once (1 = stdout, 2 = stderr). */
export const writeLine = (fd, text) => writeSync(fd, text + "\n");
