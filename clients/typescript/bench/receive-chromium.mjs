#!/usr/bin/env node
// Receive pipeline of @runwire/client in headless Chromium (see receive-core.mjs):
// `npm run build && node bench/receive-chromium.mjs`.
import { openPage, writeLine } from "../adapters/browser.mjs";

const html = `<!doctype html><meta charset="utf-8"><title>runwire bench</title>
<script type="module">
import { runBench } from "/bench/receive-core.mjs";
runBench().then((r) => window.__rwResult(JSON.stringify({ browser: navigator.userAgent, ...r }, null, 2)),
  (e) => { window.__rwLog(String(e && e.stack || e)); window.__rwResult(""); });
</script>`;

await openPage({
  html,
  log: (t) => writeLine(2, t),
  bindings: {
    __rwLog: (t) => writeLine(2, t),
    __rwResult: (r, page) => {
      if (r !== "") writeLine(1, r);
      void page.end(r === "" ? 1 : 0);
    },
  },
});
