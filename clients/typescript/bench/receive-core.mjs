// The receive pipeline benchmark of @runwire/client, shared by Node (receive.mjs) and
// Chromium (receive-chromium.mjs): text frames go into the client as a WebSocket would
// hand them over, and come out as delivered events and folded snapshots. Measures decoding
// (with the number scan), de-duplication and ordering, folding and the listeners' calls.
// Uses only what a browser has.

import { RunwireClient } from "../dist/index.js";

/** A socket the benchmark plays the server on. */
class BenchSocket {
  static last;
  binaryType = "blob";
  readyState = 1;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  constructor() {
    BenchSocket.last = this;
  }
  send() {}
  close() {}
}

const TYPES = [
  ["log.line", (i) => ({ level: "info", message: `compiling module ${i} of the workspace`, source: "cargo" })],
  ["log.line", (i) => ({ level: "warn", message: `line ${i}: unused variable`, source: "rustc" })],
  ["agent.message", (i) => ({ message_id: `m${i >> 6}`, delta: "The build passed; running the tests now. " })],
  ["run.progress", (i) => ({ percent: (i % 1000) / 10, step: "test", current: i, total: 100000 })],
  ["tool.started", (i) => ({ call_id: `c${i}`, tool: "shell", input: { command: "cargo test -p x" } })],
  ["tool.finished", (i) => ({ call_id: `c${i - 1}`, ok: true, duration_ms: 1234 })],
];

/** `count` events of run-1 as frames: `batch` frames of `perFrame` events, or `event` frames when 1. */
export function makeFrames(count, perFrame) {
  const frames = [];
  let batch = [];
  for (let seq = 1; seq <= count; seq++) {
    const [type, data] = TYPES[seq % TYPES.length];
    const event = {
      event_id: `ev_${seq.toString(36).padStart(8, "0")}`,
      run_id: "run-1",
      seq,
      type,
      time: `2026-11-22T10:${String((seq / 60) % 60 | 0).padStart(2, "0")}:${String(seq % 60).padStart(2, "0")}.000Z`,
      data: data(seq),
    };
    batch.push(event);
    if (batch.length === perFrame || seq === count) {
      frames.push(JSON.stringify(perFrame === 1 ? { type: "event", event: batch[0] } : { type: "batch", events: batch }));
      batch = [];
    }
  }
  return frames;
}

/** Feeds the frames to a fresh client once; returns events per second. */
export function runOnce(frames, count) {
  const client = new RunwireClient({ url: "ws://bench/v1/stream", WebSocket: BenchSocket, seed: 1n, pageEvents: false });
  let delivered = 0;
  let last;
  client.on("event", () => {
    delivered += 1;
  });
  client.on("snapshot", (_, s) => {
    last = s;
  });
  client.subscribe("run-1");
  void client.start();
  return new Promise((resolve, reject) => {
    setTimeout(() => {
      const ws = BenchSocket.last;
      ws.onopen({});
      const send = (m) => ws.onmessage({ data: JSON.stringify(m) });
      send({
        type: "welcome", version: "1.0", session_id: "bench", heartbeat_interval_ms: 600000, pong_timeout_ms: 10000,
        batch_window_ms: 200, replay_window_events: 100000,
        limits: { max_frame_bytes: 16777216, max_event_bytes: 65536, max_subscriptions: 100, max_messages_per_second: 50 },
      });
      send({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: count });
      const t0 = performance.now();
      for (const data of frames) ws.onmessage({ data });
      const ms = performance.now() - t0;
      if (delivered !== count || last.as_of_seq !== count) reject(new Error(`delivered ${delivered} of ${count}`));
      void client.close();
      resolve((count / ms) * 1000);
    }, 0);
  });
}

/** The whole benchmark: the median of `rounds` runs per frame shape. */
export async function runBench({ count = 100000, rounds = 7 } = {}) {
  const results = {};
  for (const perFrame of [1, 100]) {
    const frames = makeFrames(count, perFrame);
    const rates = [];
    await runOnce(frames, count); // warm-up
    for (let r = 0; r < rounds; r++) rates.push(await runOnce(frames, count));
    rates.sort((a, b) => a - b);
    const bytes = frames.reduce((n, f) => n + f.length, 0);
    results[perFrame === 1 ? "event frames" : "batch frames of 100"] = {
      events_per_second_median: Math.round(rates[rates.length >> 1]),
      events_per_second_min: Math.round(rates[0]),
      events_per_second_max: Math.round(rates[rates.length - 1]),
      mean_event_bytes: Math.round(bytes / count),
    };
  }
  return results;
}

/**
 * Memory: one client that has consumed `count` events of one run, kept alive on
 * `holder.client`. `measure(label)` is awaited before the frames exist and after they
 * are dropped, so the difference is what the client keeps.
 */
export async function runMemory({ count = 100000, measure, holder }) {
  const client = new RunwireClient({ url: "ws://bench/v1/stream", WebSocket: BenchSocket, seed: 1n, pageEvents: false });
  holder.client = client;
  client.subscribe("run-1");
  void client.start();
  await new Promise((r) => setTimeout(r, 0));
  const ws = BenchSocket.last;
  ws.onopen({});
  ws.onmessage({ data: JSON.stringify({ type: "welcome", version: "1.0", session_id: "m", heartbeat_interval_ms: 600000, pong_timeout_ms: 10000, batch_window_ms: 200, replay_window_events: 100000, limits: { max_frame_bytes: 16777216, max_event_bytes: 65536, max_subscriptions: 100, max_messages_per_second: 50 } }) });
  ws.onmessage({ data: JSON.stringify({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: count }) });
  const before = await measure("before");
  let frames = makeFrames(count, 100);
  for (const data of frames) ws.onmessage({ data });
  frames = null;
  const after = await measure("after");
  if (client.getSnapshot("run-1").as_of_seq !== count) throw new Error("not every event was folded");
  return { events: count, client_heap_growth_bytes: after - before };
}
