// @vitest-environment jsdom
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RunwireClient, type RunwireError } from "../src/client.js";
import { FakeSocket } from "./fake-socket.js";

// A background tab: timers do not fire (fake timers never advanced), the clock moves on.
let clock = 0;
beforeEach(() => {
  FakeSocket.all = [];
  clock = 1000;
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function setVisibility(v: "visible" | "hidden") {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => v });
  document.dispatchEvent(new Event("visibilitychange"));
}

describe("page events (throttled background tabs)", () => {
  it("on visibilitychange, a connection silent past its liveness deadline is closed at once (RW-HEART-5, RW-HEART-6)", async () => {
    const errors: RunwireError[] = [];
    const client = new RunwireClient({ url: "ws://t/v1/stream", WebSocket: FakeSocket, seed: 1n, clock: () => clock, livenessGraceMs: 100 });
    client.on("error", (e) => errors.push(e));
    void client.start();
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeSocket.last();
    ws.open();
    ws.welcome({ heartbeat_interval_ms: 100 });
    clock += 150; // within 100 + 100: alive
    setVisibility("visible");
    expect(ws.closedWith).toBeUndefined();
    clock += 100; // 250 ms of silence, and the throttled timer has not fired
    setVisibility("visible");
    expect(ws.closedWith).toBe(1000);
    expect(errors.at(-1)).toMatchObject({ code: "liveness_timeout" });
    await client.close();
  });

  it("on online, an overdue reconnect starts at once, never before its delay (RW-RECONNECT-1)", async () => {
    const client = new RunwireClient({ url: "ws://t/v1/stream", WebSocket: FakeSocket, seed: 1n, clock: () => clock, reconnectBaseMs: 10_000 });
    void client.start();
    await vi.advanceTimersByTimeAsync(0);
    FakeSocket.last().serverClose(1006);
    await vi.advanceTimersByTimeAsync(0);
    const s = client.state;
    expect(s.status).toBe("reconnecting");
    const delay = s.status === "reconnecting" ? s.delayMs : 0;
    expect(delay).toBeGreaterThan(1);
    clock += delay - 1;
    window.dispatchEvent(new Event("online"));
    await vi.advanceTimersByTimeAsync(0);
    expect(FakeSocket.all).toHaveLength(1); // too early: still waiting
    clock += 1;
    window.dispatchEvent(new Event("online"));
    await vi.advanceTimersByTimeAsync(0); // runs what is due now: not the backoff timer
    expect(FakeSocket.all).toHaveLength(2);
    await client.close();
  });
});
