#!/usr/bin/env node
// The client adapter of @runwire/client in a real browser (docs/client-adapter.md): a
// headless Chromium (browser.mjs: /usr/bin/chromium or RUNWIRE_CHROMIUM) on a page that
// runs the client against RUNWIRE_URL through contract.mjs, whose lines it relays to
// stdout. The browser dies with the adapter, also on SIGKILL (see browser.mjs). Build the
// package first (`npm run build`).
//
// Profile `browser`: Chromium fails a connection by itself on a text frame that is not
// valid UTF-8 (the page sees 1006), so the client cannot answer it with 4000 (RW-CLOSE-10).

import { openPage, writeLine } from "./browser.mjs";
import { ConfigError, parseRuns } from "./contract.mjs";

const log = (text) => writeLine(2, `chromium adapter: ${text}`);

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

const html = `<!doctype html><meta charset="utf-8"><title>runwire adapter</title>
<script type="module">
import { runAdapter } from "/adapters/contract.mjs";
const env = ${JSON.stringify(env).replace(/</g, "\\u003c")};
let written = 0;
const acks = new Map();
window.__rwAck = (n) => { for (const [k, r] of acks) if (k <= n) { acks.delete(k); r(); } };
const out = (obj) => { written += 1; window.__rwOut(JSON.stringify(obj)); };
// A state line must be on stdout before the client waits or connects: the runner times
// the reconnect delay from it.
const stateBarrier = () => new Promise((r) => acks.set(written, r));
runAdapter({ env, WebSocket, out, log: (t) => window.__rwLog(t), stateBarrier })
  .then((code) => window.__rwExit(String(code)), (e) => { window.__rwLog("crashed: " + (e && e.stack || e)); window.__rwExit("3"); });
</script>`;

let lines = 0;
await openPage({
  html,
  log,
  bindings: {
    __rwOut: (line, page) => {
      writeLine(1, line);
      lines += 1;
      // Acknowledge at once: the page waits for this after a state line.
      void page.evaluate(`window.__rwAck(${lines})`).catch(() => {});
    },
    __rwLog: (text) => log(text),
    __rwExit: (code, page) => void page.end(Number(code)),
  },
});
