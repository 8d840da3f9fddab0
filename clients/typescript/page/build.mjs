#!/usr/bin/env node
// Builds the live run page that `runwire serve` serves at `/` (docs/server.md): page/
// index.html, and page/main.tsx bundled with the client's sources and React into one
// page.js and one page.css. The output is deterministic (no hashes, no source maps, no
// paths of this machine), so that the copy committed in crates/runwire-server/assets/page/
// can be compared byte for byte (check.mjs).
//
//   node page/build.mjs [OUTDIR]     (default: crates/runwire-server/assets/page)

import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const HERE = dirname(fileURLToPath(import.meta.url));
export const ASSETS = resolve(HERE, "../../../crates/runwire-server/assets/page");
/** The files of the page, as the server embeds them. */
export const FILES = ["index.html", "page.js", "page.css"];

/** Builds the page into `outdir`. */
export async function buildPage(outdir) {
  mkdirSync(outdir, { recursive: true });
  const result = await esbuild.build({
    absWorkingDir: HERE,
    entryPoints: { page: join(HERE, "main.tsx") },
    outdir,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2022"],
    jsx: "automatic",
    minify: true,
    sourcemap: false,
    charset: "utf8",
    legalComments: "eof",
    define: { "process.env.NODE_ENV": '"production"' },
    tsconfig: join(HERE, "tsconfig.json"),
    logLevel: "warning",
    write: false,
  });
  for (const f of result.outputFiles) {
    // One trailing newline, so that the committed files are text files git is happy with.
    const text = f.text.endsWith("\n") ? f.text : `${f.text}\n`;
    writeFileSync(f.path, text);
  }
  copyFileSync(join(HERE, "index.html"), join(outdir, "index.html"));
  return FILES.map((n) => join(outdir, n));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = resolve(process.argv[2] ?? ASSETS);
  const files = await buildPage(out);
  for (const f of files) console.log(`${f} (${readFileSync(f).length} bytes)`);
}
