import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SharedRunwireClient, type BroadcastChannelLike, type LockManagerLike } from "../src/shared.js";
import { event, FakeSocket } from "./fake-socket.js";

/** The Web Locks API's exclusive locks, in one process: one holder, a queue, abort signals. */
class FakeLocks implements LockManagerLike {
  private held = new Set<string>();
  private queue = new Map<string, { cb: () => Promise<void>; resolve: (v: unknown) => void; reject: (e: unknown) => void }[]>();

  request(name: string, options: { signal?: AbortSignal }, cb: () => Promise<void>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const entry = { cb, resolve, reject };
      const q = this.queue.get(name) ?? [];
      this.queue.set(name, q);
      q.push(entry);
      options.signal?.addEventListener("abort", () => {
        const i = q.indexOf(entry);
        if (i >= 0) {
          q.splice(i, 1);
          reject(new Error("aborted"));
        }
      });
      this.next(name);
    });
  }

  private next(name: string): void {
    if (this.held.has(name)) return;
    const entry = this.queue.get(name)?.shift();
    if (entry === undefined) return;
    this.held.add(name);
    entry.cb().then(
      (v) => {
        this.held.delete(name);
        entry.resolve(v);
        this.next(name);
      },
      (e) => {
        this.held.delete(name);
        entry.reject(e);
        this.next(name);
      },
    );
  }
}

const BC = globalThis.BroadcastChannel as unknown as new (name: string) => BroadcastChannelLike;
let n = 0;

beforeEach(() => {
  FakeSocket.all = [];
  n += 1;
});
afterEach(() => {
  vi.unstubAllGlobals();
});

function tab(locks: LockManagerLike, extra = {}) {
  return new SharedRunwireClient({
    url: "ws://test/v1/stream",
    WebSocket: FakeSocket,
    seed: 5n,
    pageEvents: false,
    channelName: `test-${n}`,
    BroadcastChannel: BC,
    locks,
    ...extra,
  });
}

describe("SharedRunwireClient", () => {
  it("opens one socket for two tabs, relays the run to the other tab, and hands over when the leader closes", async () => {
    const locks = new FakeLocks();
    const a = tab(locks);
    const b = tab(locks);
    a.subscribe("run-1");
    b.subscribe("run-2");
    void a.start();
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(1));
    void b.start();
    await vi.waitFor(() => expect(a.mode).toBe("leader"));
    expect(b.mode).toBe("follower");
    const ws = FakeSocket.last();
    ws.open();
    ws.welcome();
    // The leader subscribes the union of both tabs' runs.
    await vi.waitFor(() => expect(ws.sent.some((m) => m.type === "subscribe")).toBe(true));
    expect(ws.sent[0]).toMatchObject({ type: "hello", subscriptions: [{ run_id: "run-1" }] });
    expect(ws.sent.find((m) => m.type === "subscribe")).toMatchObject({ subscriptions: [{ run_id: "run-2" }] });
    const bEvents: number[] = [];
    b.on("event", (e) => bEvents.push(e.seq));
    ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 0 });
    ws.recv({ type: "subscribed", run_id: "run-2", epoch: "e2", after_seq: 0, head_seq: 2 });
    ws.recv({
      type: "batch",
      events: [event(1, "run.status", { status: "running" }, "run-2"), event(2, "run.phase", { phase: "build" }, "run-2"), event(1, "log.line", { level: "info", message: "x" }, "run-1")],
    });
    await vi.waitFor(() => expect(b.getSnapshot("run-2")).toMatchObject({ as_of_seq: 2, status: "running", phase: "build" }));
    expect(bEvents).toEqual([1, 2]); // only its own run's events
    expect(b.state.status).toBe("connected");
    expect(FakeSocket.all).toHaveLength(1);

    // The leader's tab goes away: b takes over and resumes from the relayed snapshot.
    await a.close();
    await vi.waitFor(() => expect(b.mode).toBe("leader"));
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(2));
    const ws2 = FakeSocket.last();
    ws2.open();
    expect(ws2.sent[0]).toMatchObject({ type: "hello", subscriptions: [{ run_id: "run-2", epoch: "e2", after_seq: 2 }] });
    ws2.welcome();
    ws2.recv({ type: "subscribed", run_id: "run-2", epoch: "e2", after_seq: 2, head_seq: 3 });
    ws2.recv({ type: "event", event: event(3, "run.status", { status: "completed" }, "run-2") });
    expect(b.getSnapshot("run-2")).toMatchObject({ as_of_seq: 3, status: "completed", phase: "build" });
    expect(bEvents).toEqual([1, 2, 3]);
    await b.close();
  });

  it("runs alone in its tab without BroadcastChannel or Web Locks", async () => {
    vi.stubGlobal("navigator", {}); // a browser without navigator.locks
    const c = new SharedRunwireClient({ url: "ws://test/v1/stream", WebSocket: FakeSocket, pageEvents: false });
    c.subscribe("run-1");
    void c.start();
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(1));
    expect(c.mode).toBe("solo");
    FakeSocket.last().open();
    expect(FakeSocket.last().sent[0]).toMatchObject({ type: "hello", subscriptions: [{ run_id: "run-1" }] });
    await c.close();
  });
});
