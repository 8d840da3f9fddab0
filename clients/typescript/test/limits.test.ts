import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RunwireClient, type RunwireError } from "../src/client.js";
import { FakeSocket } from "./fake-socket.js";

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

const limits = (over: Record<string, number>) => ({
  limits: { max_frame_bytes: 65536, max_event_bytes: 65536, max_subscriptions: 100, max_messages_per_second: 50, ...over },
});

describe("announced limits (RW-LIMIT-5)", () => {
  it("holds at most max_subscriptions runs, subscribes a waiting run when a slot frees, and keeps to it in the next hello", async () => {
    const errors: RunwireError[] = [];
    const client = new RunwireClient({ url: "ws://t/v1/stream", WebSocket: FakeSocket, seed: 1n, pageEvents: false, reconnectBaseMs: 1 });
    client.on("error", (e) => errors.push(e));
    client.subscribe("run-1");
    client.subscribe("run-2");
    void client.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.open();
    ws.welcome(limits({ max_subscriptions: 2 }));
    client.subscribe("run-3");
    expect(ws.sent.filter((m) => m.type === "subscribe")).toEqual([]);
    expect(errors.at(-1)).toMatchObject({ code: "too_many_subscriptions", runId: "run-3", terminal: false });
    client.unsubscribe("run-1");
    expect(ws.sent.slice(-2)).toEqual([
      { type: "unsubscribe", run_ids: ["run-1"] },
      { type: "subscribe", subscriptions: [{ run_id: "run-3" }] },
    ]);
    client.subscribe("run-4");
    ws.serverClose(1011);
    await vi.advanceTimersByTimeAsync(10);
    const ws2 = FakeSocket.last();
    ws2.open();
    expect(ws2.sent[0]).toMatchObject({ subscriptions: [{ run_id: "run-2" }, { run_id: "run-3" }] });
    expect((ws2.sent[0]!.subscriptions as unknown[]).length).toBe(2);
    await client.close();
  });

  it("splits subscriptions over frames within max_frame_bytes", async () => {
    const client = new RunwireClient({ url: "ws://t/v1/stream", WebSocket: FakeSocket, seed: 1n, pageEvents: false, reconnectBaseMs: 1 });
    void client.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.open();
    ws.welcome(limits({ max_frame_bytes: 120 }));
    ws.serverClose(1011); // the next hello knows the limit
    await vi.advanceTimersByTimeAsync(10);
    for (let i = 0; i < 6; i++) client.subscribe(`run-with-a-long-name-${i}`);
    const ws2 = FakeSocket.last();
    ws2.open();
    ws2.welcome(limits({ max_frame_bytes: 120 }));
    const frames = ws2.sent.filter((m) => m.type === "subscribe" || m.type === "hello");
    const runs = frames.flatMap((m) => ((m.subscriptions as { run_id: string }[] | undefined) ?? []).map((r) => r.run_id));
    expect(runs).toEqual([0, 1, 2, 3, 4, 5].map((i) => `run-with-a-long-name-${i}`));
    for (const m of frames) expect(JSON.stringify(m).length).toBeLessThanOrEqual(120);
    expect(frames.filter((m) => m.type === "subscribe").length).toBeGreaterThan(1);
    await client.close();
  });
});
