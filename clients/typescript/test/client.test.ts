import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RunwireClient, type ConnectionState, type RunwireError } from "../src/client.js";
import { MemoryCursorStore } from "../src/cursor-store.js";
import type { RunEvent } from "../src/wire.js";
import { event, FakeSocket } from "./fake-socket.js";

function makeClient(extra: Partial<ConstructorParameters<typeof RunwireClient>[0]> = {}) {
  const client = new RunwireClient({ url: "ws://test/v1/stream", WebSocket: FakeSocket, seed: 7n, pageEvents: false, ...extra });
  const delivered: RunEvent[] = [];
  const states: ConnectionState[] = [];
  const errors: RunwireError[] = [];
  client.on("event", (e) => delivered.push(e));
  client.on("state", (s) => states.push(s));
  client.on("error", (e) => errors.push(e));
  return { client, delivered, states, errors };
}

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

async function connected(client: RunwireClient): Promise<FakeSocket> {
  void client.start();
  await vi.advanceTimersByTimeAsync(0);
  const ws = FakeSocket.last();
  ws.open();
  ws.welcome();
  return ws;
}

describe("RunwireClient", () => {
  it("sends hello first with every run and its cursor (RW-CONN-4, RW-RECONNECT-8)", async () => {
    const { client } = makeClient({ token: "t0" });
    client.subscribe("run-1");
    client.subscribe("run-2", { epoch: "e9", seq: 4 });
    client.subscribe("run-3", { seq: 4 });
    const ws = await connected(client);
    expect(ws.sent[0]).toMatchObject({
      type: "hello",
      versions: ["1.0"],
      token: "t0",
      subscriptions: [{ run_id: "run-1" }, { run_id: "run-2", epoch: "e9", after_seq: 4 }, { run_id: "run-3" }],
    });
    expect(ws.url).not.toContain("t0"); // RW-AUTH-1
  });

  it("answers ping from the frame handler (RW-HEART-4)", async () => {
    const { client } = makeClient();
    const ws = await connected(client);
    ws.recv({ type: "ping", id: "p-1" });
    expect(ws.sent.at(-1)).toEqual({ type: "pong", id: "p-1" });
  });

  it("handles reset: snapshot becomes the state, buffer dropped, later seqs only (RW-RESUME-9, RW-RESUME-14)", async () => {
    const { client, delivered } = makeClient();
    const resets: unknown[] = [];
    client.on("reset", (m) => resets.push(m));
    client.subscribe("run-1");
    const ws = await connected(client);
    ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 3 });
    ws.recv({ type: "event", event: event(1) });
    ws.recv({ type: "event", event: event(3) }); // buffered behind a gap
    ws.recv({
      type: "reset",
      run_id: "run-1",
      epoch: "e2",
      reason: "epoch_mismatch",
      snapshot: { run_id: "run-1", epoch: "e2", as_of_seq: 5, status: "running", phase: "plan" },
    });
    expect(resets).toHaveLength(1);
    expect(client.getSnapshot("run-1")).toEqual({ run_id: "run-1", epoch: "e2", as_of_seq: 5, status: "running", phase: "plan" });
    ws.recv({ type: "batch", events: [event(4), event(5), event(6, "run.status", { status: "completed" })] });
    expect(delivered.map((e) => e.seq)).toEqual([1, 6]);
    expect(client.getSnapshot("run-1")).toMatchObject({ epoch: "e2", as_of_seq: 6, status: "completed", phase: "plan" });
  });

  it("resubscribes after an unfilled gap: unsubscribe, then subscribe from the cursor (RW-ORDER-5)", async () => {
    const { client, delivered } = makeClient({ gapTimeoutMs: 50 });
    client.subscribe("run-1");
    const ws = await connected(client);
    ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 0 });
    ws.recv({ type: "batch", events: [event(1), event(2), event(4)] });
    await vi.advanceTimersByTimeAsync(49);
    expect(ws.sent.some((m) => m.type === "unsubscribe")).toBe(false);
    await vi.advanceTimersByTimeAsync(2);
    expect(ws.sent.slice(-2)).toEqual([
      { type: "unsubscribe", run_ids: ["run-1"] },
      { type: "subscribe", subscriptions: [{ run_id: "run-1", epoch: "e1", after_seq: 2 }] },
    ]);
    ws.recv({ type: "event", event: event(3) }); // RW-ORDER-7: not while resubscribing
    ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 2, head_seq: 4 });
    ws.recv({ type: "batch", events: [event(3), event(4)] });
    expect(delivered.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
  });

  it("closes 4000 on an undecodable frame, reports it and reconnects with the cursor (RW-INPUT-12)", async () => {
    const { client, delivered, errors, states } = makeClient({ reconnectBaseMs: 100 });
    client.subscribe("run-1");
    const ws = await connected(client);
    ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 0 });
    ws.recv({ type: "event", event: event(1) });
    ws.recv('{"type":"subscribed","run_id":"run-1","epoch":"e1","after_seq":0,"head_seq":2.0}');
    expect(ws.closedWith).toBe(4000);
    expect(errors.at(-1)).toMatchObject({ code: "invalid_frame", terminal: false });
    await vi.advanceTimersByTimeAsync(0);
    const r = states.at(-1);
    expect(r).toMatchObject({ status: "reconnecting", attempt: 1 });
    await vi.advanceTimersByTimeAsync(1000);
    const ws2 = FakeSocket.last();
    expect(ws2).not.toBe(ws);
    ws2.open();
    expect(ws2.sent[0]).toMatchObject({ subscriptions: [{ run_id: "run-1", epoch: "e1", after_seq: 1 }] });
    expect(delivered.map((e) => e.seq)).toEqual([1]);
    await client.close();
  });

  it("stops on a terminal error frame, reporting it once (RW-ERROR-8, RW-VERSION-6)", async () => {
    const { client, errors, states } = makeClient();
    const done = client.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.open();
    ws.recv({ type: "error", code: "unsupported_version", message: "no", retryable: false, close_code: 4002, supported_versions: ["2.0"] });
    await done;
    expect(errors).toEqual([
      { code: "unsupported_version", message: "no", terminal: true, closeCode: 4002, supportedVersions: ["2.0"] },
    ]);
    expect(states.at(-1)).toMatchObject({ status: "failed", closeCode: 4002 });
    expect(FakeSocket.all).toHaveLength(1);
  });

  it("gives up after max attempts with the last close and error codes (RW-RECONNECT-3)", async () => {
    const { client, errors, states } = makeClient({ maxAttempts: 3, reconnectBaseMs: 10 });
    const done = client.start();
    for (let i = 0; i < 3; i++) {
      await vi.advanceTimersByTimeAsync(100);
      const ws = FakeSocket.last();
      ws.open();
      ws.recv({ type: "error", code: "server_overloaded", message: "busy", retryable: true, close_code: 4104 });
      ws.serverClose(4104);
    }
    await vi.advanceTimersByTimeAsync(100);
    await done;
    expect(states.filter((s) => s.status === "connecting").map((s) => (s as { attempt: number }).attempt)).toEqual([0, 1, 2]);
    expect(errors.at(-1)).toMatchObject({ code: "reconnect_failed", terminal: true, closeCode: 4104, lastErrorCode: "server_overloaded" });
  });

  it("declares a silent connection dead by the clock (RW-HEART-5) and asks the token provider every attempt (RW-AUTH-9)", async () => {
    let asked = 0;
    const { client, errors } = makeClient({ livenessGraceMs: 100, reconnectBaseMs: 1, token: () => `t${asked++}` });
    client.subscribe("run-1");
    void client.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.open();
    ws.welcome({ heartbeat_interval_ms: 100 });
    await vi.advanceTimersByTimeAsync(150);
    ws.recv({ type: "ping", id: "p" }); // any frame keeps it alive
    await vi.advanceTimersByTimeAsync(150);
    expect(ws.closedWith).toBeUndefined();
    await vi.advanceTimersByTimeAsync(60);
    expect(ws.closedWith).toBe(1000);
    expect(errors.at(-1)).toMatchObject({ code: "liveness_timeout" });
    await vi.advanceTimersByTimeAsync(50);
    FakeSocket.last().open();
    expect(FakeSocket.last().sent[0]).toMatchObject({ token: "t1" });
    await client.close();
  });

  it("keeps run state in the cursor store and resumes from it (page refresh)", async () => {
    const store = new MemoryCursorStore();
    const first = makeClient({ cursorStore: store, persistIntervalMs: 0 });
    first.client.subscribe("run-1");
    const ws = await connected(first.client);
    ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 2 });
    ws.recv({ type: "batch", events: [event(1, "run.status", { status: "running" }), event(2)] });
    await first.client.close();
    const second = makeClient({ cursorStore: store });
    second.client.subscribe("run-1");
    expect(second.client.getSnapshot("run-1")).toMatchObject({ as_of_seq: 2, status: "running" });
    const ws2 = await connected(second.client);
    expect(ws2.sent[0]).toMatchObject({ subscriptions: [{ run_id: "run-1", epoch: "e1", after_seq: 2 }] });
    await second.client.close();
  });
});

describe("RunwireClient.close", () => {
  it("opens no socket when closed while the token provider is still answering (RW-CONN-11)", async () => {
    let answer!: (t: string) => void;
    const client = new RunwireClient({
      url: "ws://test/v1/stream",
      WebSocket: FakeSocket,
      pageEvents: false,
      token: () => new Promise<string>((r) => (answer = r)),
    });
    const done = client.start();
    await vi.advanceTimersByTimeAsync(0);
    const closing = client.close();
    answer("t");
    await closing;
    await done;
    expect(FakeSocket.all).toHaveLength(0);
    expect(client.state.status).toBe("closed");
  });
});

describe("RunwireClient liveness after a stall of its own (RW-HEART-5, RW-HEART-6)", () => {
  // The clock is ours: it jumps ahead of the fake timers the way the wall clock runs
  // on while a stalled event loop cannot fire them.
  let clock = 0;
  const start = async () => {
    const { client, errors } = makeClient({ clock: () => clock, livenessGraceMs: 100 });
    void client.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.open();
    ws.welcome({ heartbeat_interval_ms: 100 }); // liveness budget 200 ms from here
    return { client, errors, ws };
  };
  beforeEach(() => {
    clock = 1000;
  });

  it("a frame queued during the stall is processed before silence is declared", async () => {
    const { client, ws } = await start();
    clock += 500; // the loop stalls for 500 ms; the 200 ms timer fires 300 ms late
    await vi.advanceTimersByTimeAsync(200);
    expect(ws.closedWith).toBeUndefined();
    ws.recv({ type: "ping", id: "p-1" }); // the ping that waited behind the timer
    clock += 150;
    await vi.advanceTimersByTimeAsync(150);
    expect(ws.closedWith).toBeUndefined();
    expect(ws.sent.at(-1)).toEqual({ type: "pong", id: "p-1" });
    await client.close();
  });

  it("a server that really went silent is declared dead once the stall's length has passed", async () => {
    const { client, errors, ws } = await start();
    clock += 500;
    await vi.advanceTimersByTimeAsync(200); // 300 ms late: look again 200 ms (one budget) later
    expect(ws.closedWith).toBeUndefined();
    clock += 199;
    await vi.advanceTimersByTimeAsync(199);
    expect(ws.closedWith).toBeUndefined();
    clock += 1;
    await vi.advanceTimersByTimeAsync(1);
    expect(ws.closedWith).toBe(1000);
    expect(errors.at(-1)).toMatchObject({ code: "liveness_timeout" });
    await client.close();
  });

  it("a timer on time declares silence at once", async () => {
    const { client, ws } = await start();
    clock += 205; // 5 ms late: no stall
    await vi.advanceTimersByTimeAsync(200);
    expect(ws.closedWith).toBe(1000);
    await client.close();
  });
});

describe("RunwireClient closing handshake", () => {
  it("resolves start() and close() only after the socket has closed, so the close frame is not lost (RW-CONN-11)", async () => {
    const client = new RunwireClient({ url: "ws://test/v1/stream", WebSocket: FakeSocket, pageEvents: false, seed: 3n, closeWhenDone: true });
    client.subscribe("run-1");
    let done = false;
    const started = client.start().then(() => (done = true));
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.holdClose = true;
    ws.open();
    ws.welcome();
    ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 0 });
    ws.recv({ type: "event", event: event(1, "run.status", { status: "completed" }) });
    expect(ws.closedWith).toBe(1000);
    await vi.advanceTimersByTimeAsync(500);
    expect(done).toBe(false); // still closing: the server has not echoed the close frame
    ws.serverClose(1000);
    await vi.advanceTimersByTimeAsync(0);
    await started;
    expect(done).toBe(true);
    expect(client.state.status).toBe("closed");
  });

  it("a terminal close of its own (4000) also waits for the closing handshake (RW-VERSION-7, RW-CONN-11)", async () => {
    const client = new RunwireClient({ url: "ws://test/v1/stream", WebSocket: FakeSocket, pageEvents: false, seed: 3n });
    client.subscribe("run-1");
    let done = false;
    const started = client.start().then(
      () => (done = true),
      () => (done = true),
    );
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.holdClose = true;
    ws.open();
    ws.welcome({ version: "9.9" });
    expect(ws.closedWith).toBe(4000);
    await vi.advanceTimersByTimeAsync(500);
    expect(done).toBe(false); // still closing: the server has not echoed the close frame
    expect(client.state.status).not.toBe("failed");
    ws.serverClose(4000);
    await vi.advanceTimersByTimeAsync(0);
    await started;
    expect(done).toBe(true);
    expect(client.state.status).toBe("failed");
  });

  it("does not wait for ever on a socket that never finishes closing", async () => {
    const client = new RunwireClient({ url: "ws://test/v1/stream", WebSocket: FakeSocket, pageEvents: false, seed: 3n });
    void client.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.holdClose = true;
    ws.open();
    ws.welcome();
    let closed = false;
    const closing = client.close().then(() => (closed = true));
    await vi.advanceTimersByTimeAsync(999);
    expect(closed).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await closing;
    expect(closed).toBe(true);
  });
});

describe("RunwireClient errors naming a run", () => {
  it("a non-retryable error for an open run ends nothing (RW-SUB-5); one for a pending entry drops the run for good (RW-SUB-10)", async () => {
    vi.useFakeTimers();
    const client = new RunwireClient({ url: "ws://test/v1/stream", WebSocket: FakeSocket, pageEvents: false, seed: 2n });
    const delivered: number[] = [];
    client.on("event", (e) => delivered.push(e.seq));
    client.subscribe("run-1");
    client.subscribe("run-2");
    void client.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.open();
    ws.welcome();
    ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 0 });
    ws.recv({ type: "error", code: "acme_unknown", message: "m", retryable: false, run_id: "run-1" });
    ws.recv({ type: "error", code: "forbidden", message: "m", retryable: false, run_id: "run-2" });
    ws.recv({ type: "event", event: event(1) });
    expect(delivered).toEqual([1]);
    expect(client.runIds).toEqual(["run-1"]);
    await client.close();
    vi.useRealTimers();
  });
});
