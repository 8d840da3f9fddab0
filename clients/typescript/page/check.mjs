#!/usr/bin/env node
// Checks that the page assets committed in crates/runwire-server/assets/page/ are what
// build.mjs makes from page/ and the client's sources now: builds into a temporary
// directory and compares the files byte for byte. Exits 1 naming the files that differ
// (rebuild with `npm run page:build` and commit them).

import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ASSETS, FILES, buildPage } from "./build.mjs";

const tmp = mkdtempSync(join(tmpdir(), "runwire-page-check-"));
try {
  await buildPage(tmp);
  const stale = [];
  for (const name of FILES) {
    let committed;
    try {
      committed = readFileSync(join(ASSETS, name));
    } catch {
      stale.push(`${name} (missing)`);
      continue;
    }
    if (!committed.equals(readFileSync(join(tmp, name)))) stale.push(name);
  }
  const extra = readdirSync(ASSETS).filter((n) => !FILES.includes(n));
  for (const n of extra) stale.push(`${n} (not made by the build)`);
  if (stale.length > 0) {
    console.error(`page assets out of date in ${ASSETS}: ${stale.join(", ")}`);
    console.error("rebuild them with `npm run page:build` (in clients/typescript) and commit them");
    process.exit(1);
  }
  console.log(`page assets up to date (${FILES.join(", ")})`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
