#!/usr/bin/env node
// The client adapter of @runwire/client under Node (docs/client-adapter.md), with the
// `ws` package as its WebSocket. Build the package first: `npm run build`.
//
// Profile `browser`: `ws`, like every browser, fails a connection by itself on a text
// frame that is not valid UTF-8, so the client cannot answer it with 4000 (RW-CLOSE-10).

import { writeSync } from "node:fs";
import WebSocket from "ws";
import { ConfigError, runAdapter } from "./contract.mjs";

/** `ws` with the options a Runwire client wants: no compression offer needed, big frames. */
class NodeWebSocket extends WebSocket {
  constructor(url) {
    super(url, { perMessageDeflate: false, maxPayload: 16 * 1024 * 1024, handshakeTimeout: 10_000 });
  }
}

// Synchronous writes: a line is on the pipe before the client acts on what it says.
const out = (obj) => writeSync(1, JSON.stringify(obj) + "\n");
const log = (text) => writeSync(2, text + "\n");

try {
  const code = await runAdapter({ env: process.env, WebSocket: NodeWebSocket, out, log });
  process.exit(code);
} catch (e) {
  if (e instanceof ConfigError) {
    log(`@runwire/client adapter: ${e.message}`);
    process.exit(2);
  }
  throw e;
}
