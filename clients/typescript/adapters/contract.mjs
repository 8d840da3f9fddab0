// The client adapter contract (docs/client-adapter.md) on top of @runwire/client: reads
// the RUNWIRE_* settings from an environment object, runs the client, and writes one JSON
// line per thing the client delivered to its application. Shared by the Node adapter
// (node.mjs) and the page of the Chromium adapter (chromium.mjs), so both judge the same
// code. It uses only what a browser has.

import { RunwireClient } from "../dist/index.js";

/** Thrown for a bad setting: the adapter exits 2 with the message. */
export class ConfigError extends Error {}

function envInt(env, name) {
  const v = (env[name] ?? "").trim();
  if (v === "") return undefined;
  if (!/^[0-9]+$/.test(v)) throw new ConfigError(`${name}=${JSON.stringify(v)} is not a non-negative integer`);
  return Number(v);
}

/** RUN_ID, RUN_ID@AFTER_SEQ or RUN_ID@EPOCH:AFTER_SEQ, comma-separated. */
export function parseRuns(value) {
  const runs = new Map();
  for (const raw of (value ?? "").split(",")) {
    const entry = raw.trim();
    if (entry === "") continue;
    const at = entry.indexOf("@");
    const runId = at < 0 ? entry : entry.slice(0, at);
    let cursor = {};
    if (at >= 0) {
      const c = entry.slice(at + 1);
      const colon = c.lastIndexOf(":");
      const epoch = colon < 0 ? "" : c.slice(0, colon);
      const seq = colon < 0 ? c : c.slice(colon + 1);
      if (!/^[0-9]+$/.test(seq)) throw new ConfigError(`RUNWIRE_RUNS entry ${JSON.stringify(entry)}: ${JSON.stringify(seq)} is not a seq`);
      // RW-RESUME-15: a seq without its epoch is handed over as it is; the client replays.
      cursor = epoch === "" ? { seq: Number(seq) } : { epoch, seq: Number(seq) };
    }
    if (runId === "" || runs.has(runId)) throw new ConfigError(`RUNWIRE_RUNS entry ${JSON.stringify(entry)} is empty or repeated`);
    runs.set(runId, cursor);
  }
  if (runs.size === 0) throw new ConfigError("RUNWIRE_RUNS lists no run");
  return runs;
}

/**
 * Runs the adapter. `out(obj)` writes one line; `log(text)` goes to stderr. Resolves with
 * the exit status: 0 after a clean close, 1 after a terminal error.
 */
export async function runAdapter({ env, WebSocket, out, log, profile = "browser", stateBarrier }) {
  const url = (env.RUNWIRE_URL ?? "").trim();
  if (url === "") throw new ConfigError("RUNWIRE_URL is required");
  const runs = parseRuns(env.RUNWIRE_RUNS);
  const tokensVar = (env.RUNWIRE_TOKENS ?? "").trim();
  const tokenVar = (env.RUNWIRE_TOKEN ?? "").trim();
  const tokens = tokensVar !== "" ? tokensVar.split(",").map((t) => t.trim()) : tokenVar !== "" ? [tokenVar] : [];
  let asked = 0;
  const versionsVar = (env.RUNWIRE_VERSIONS ?? "").trim();
  const seedVar = (env.RUNWIRE_SEED ?? "").trim();
  const opts = {
    url,
    WebSocket,
    closeWhenDone: true,
    pageEvents: false,
    clientInfo: { name: "@runwire/client adapter", version: "0.1.0" },
  };
  if (tokens.length > 0) {
    // RW-AUTH-9: the k-th attempt since the start gets entry k; the last one repeats.
    opts.token = () => tokens[Math.min(asked++, tokens.length - 1)];
  }
  if (versionsVar !== "") opts.versions = versionsVar.split(",").map((v) => v.trim());
  if (seedVar !== "") {
    if (!/^[0-9]+$/.test(seedVar)) throw new ConfigError(`RUNWIRE_SEED=${seedVar} is not an integer`);
    opts.seed = BigInt(seedVar);
  }
  const numbers = {
    reconnectBaseMs: "RUNWIRE_RECONNECT_BASE_MS",
    reconnectFactor: "RUNWIRE_RECONNECT_FACTOR",
    reconnectCapMs: "RUNWIRE_RECONNECT_CAP_MS",
    maxAttempts: "RUNWIRE_RECONNECT_MAX_ATTEMPTS",
    stableSessionMs: "RUNWIRE_STABLE_SESSION_MS",
    livenessGraceMs: "RUNWIRE_LIVENESS_GRACE_MS",
    gapTimeoutMs: "RUNWIRE_GAP_TIMEOUT_MS",
    welcomeTimeoutMs: "RUNWIRE_WELCOME_TIMEOUT_MS",
  };
  for (const [k, name] of Object.entries(numbers)) {
    const v = envInt(env, name);
    if (v !== undefined) opts[k] = v;
  }
  if (stateBarrier !== undefined) opts.stateBarrier = stateBarrier;

  const client = new RunwireClient(opts);
  log(`@runwire/client adapter: RUNWIRE_SEED=${client.seed}`);
  out({ kind: "platform", profile });

  client.on("state", (s) => {
    const line = { kind: "state", state: s.status };
    if (s.status === "connecting") line.attempt = s.attempt;
    if (s.status === "reconnecting") {
      line.attempt = s.attempt;
      line.delay_ms = s.delayMs;
    }
    if ((s.status === "reconnecting" || s.status === "failed") && s.closeCode !== undefined) line.close_code = s.closeCode;
    out(line);
  });
  client.on("subscribed", (m) => {
    out({ kind: "subscribed", run_id: m.run_id, epoch: m.epoch, after_seq: m.after_seq, head_seq: m.head_seq });
  });
  client.on("event", (e) => {
    out({ kind: "event", event: e });
    out({ kind: "folded", run_id: e.run_id, snapshot: client.getSnapshot(e.run_id) });
  });
  client.on("reset", (m) => {
    out({ kind: "reset", run_id: m.run_id, epoch: m.epoch, reason: m.reason, snapshot: m.snapshot });
    out({ kind: "folded", run_id: m.run_id, snapshot: client.getSnapshot(m.run_id) });
  });
  client.on("error", (e) => {
    const line = { kind: "error", code: e.code, message: e.message, terminal: e.terminal };
    if (e.runId !== undefined) line.run_id = e.runId;
    if (e.closeCode !== undefined) line.close_code = e.closeCode;
    if (e.supportedVersions !== undefined) line.supported_versions = e.supportedVersions;
    if (e.lastErrorCode !== undefined) line.last_error_code = e.lastErrorCode;
    out(line);
  });
  for (const [runId, cursor] of runs) client.subscribe(runId, cursor);
  await client.start();
  return client.state.status === "failed" ? 1 : 0;
}
