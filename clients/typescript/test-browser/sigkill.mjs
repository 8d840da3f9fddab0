#!/usr/bin/env node
// The Chromium adapter's browser dies with it, also on SIGKILL, and leaves no profile
// behind. Needs /usr/bin/chromium (or RUNWIRE_CHROMIUM) and a build (`npm run build`);
// CI runs it after installing Chromium: `npm run test:browser`. Exits 1 on failure.
//
// It starts the adapter against a port where nothing listens (so it keeps reconnecting
// with a long backoff), waits for its `reconnecting` line (the page runs), kills the
// adapter with SIGKILL and then polls until no process names the browser's profile.

import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const adapter = join(dirname(dirname(fileURLToPath(import.meta.url))), "adapters", "chromium.mjs");

// A free port, closed again: connections to it are refused.
const port = await new Promise((resolve) => {
  const srv = createServer();
  srv.listen(0, "127.0.0.1", () => {
    const p = srv.address().port;
    srv.close(() => resolve(p));
  });
});

const child = spawn(process.execPath, [adapter], {
  env: {
    ...process.env,
    RUNWIRE_URL: `ws://127.0.0.1:${port}/v1/stream`,
    RUNWIRE_RUNS: "run-1",
    RUNWIRE_RECONNECT_BASE_MS: "600000",
    RUNWIRE_RECONNECT_FACTOR: "1",
    RUNWIRE_SEED: "1",
  },
  stdio: ["ignore", "pipe", "pipe"],
});
let stderr = "";
child.stderr.on("data", (c) => (stderr += c));
const deadline = (ms, what) =>
  setTimeout(() => {
    console.error(`FAIL: ${what} within ${ms} ms\n${stderr}`);
    child.kill("SIGKILL");
    process.exit(1);
  }, ms);

const waiting = deadline(60_000, "no reconnecting line from the adapter");
await new Promise((resolve) => {
  let out = "";
  child.stdout.on("data", (c) => {
    out += c;
    if (out.includes('"state":"reconnecting"')) resolve();
  });
});
clearTimeout(waiting);
const profile = /browser profile (\S+)/.exec(stderr)?.[1];
if (profile === undefined) {
  console.error(`FAIL: the adapter did not name its browser profile\n${stderr}`);
  process.exit(1);
}

/** Live (not zombie) processes whose command line names the profile. */
function browsers() {
  const found = [];
  for (const pid of readdirSync("/proc").filter((d) => /^[0-9]+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (cmd.includes(profile) && state !== "Z") found.push(pid);
    } catch {
      // the process ended meanwhile
    }
  }
  return found;
}

const before = browsers().length;
if (before === 0) {
  console.error("FAIL: no browser process found before the kill");
  process.exit(1);
}
child.kill("SIGKILL");
const gone = deadline(10_000, `the browser (${browsers().join(" ")}) or its profile ${profile} outlived the adapter`);
for (;;) {
  if (browsers().length === 0 && !existsSync(profile)) break;
  await new Promise((r) => setTimeout(r, 50)); // polling the process table, not synchronizing
}
clearTimeout(gone);
console.log(`ok: ${before} browser processes and the profile went away with the adapter (SIGKILL)`);
process.exit(0);
