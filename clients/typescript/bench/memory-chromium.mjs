#!/usr/bin/env node
// The JS heap a page's client keeps after a run of 100,000 events, in headless Chromium
// (see runMemory in receive-core.mjs): `npm run build && node bench/memory-chromium.mjs`.
// The page asks for each measurement; this side collects garbage and reads the heap
// over the DevTools protocol.
import { openPage, writeLine } from "../adapters/browser.mjs";

const html = `<!doctype html><meta charset="utf-8"><title>runwire memory</title>
<script type="module">
import { runMemory } from "/bench/receive-core.mjs";
const waiters = new Map();
window.__rwMeasured = (label, bytes) => waiters.get(label)(bytes);
const measure = (label) => new Promise((r) => { waiters.set(label, r); window.__rwMeasure(label); });
window.__holder = {};
runMemory({ measure, holder: window.__holder }).then((r) => window.__rwResult(JSON.stringify(r)),
  (e) => { window.__rwLog(String(e && e.stack || e)); window.__rwResult(""); });
</script>`;

await openPage({
  html,
  log: (t) => writeLine(2, t),
  bindings: {
    __rwLog: (t) => writeLine(2, t),
    __rwMeasure: async (label, page) => {
      await page.call("HeapProfiler.collectGarbage");
      await page.call("HeapProfiler.collectGarbage");
      const { usedSize } = await page.call("Runtime.getHeapUsage");
      await page.evaluate(`window.__rwMeasured(${JSON.stringify(label)}, ${usedSize})`);
    },
    __rwResult: (r, page) => {
      if (r !== "") writeLine(1, JSON.stringify({ browser: "chromium", ...JSON.parse(r) }));
      void page.end(r === "" ? 1 : 0);
    },
  },
});
