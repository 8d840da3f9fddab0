import type { WebSocketLike } from "../src/client.js";

/** A scripted WebSocket for tests: the test plays the server. */
export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  binaryType = "blob";
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: Record<string, unknown>[] = [];
  closedWith: number | undefined;
  /** When set, our close() waits for the test to call `serverClose` (the server's echo). */
  holdClose = false;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }

  static last(): FakeSocket {
    const s = FakeSocket.all[FakeSocket.all.length - 1];
    if (s === undefined) throw new Error("no socket");
    return s;
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  recv(msg: unknown): void {
    this.onmessage?.({ data: typeof msg === "string" ? msg : JSON.stringify(msg) });
  }

  welcome(over: Record<string, unknown> = {}): void {
    this.recv({
      type: "welcome",
      version: "1.0",
      session_id: "s1",
      heartbeat_interval_ms: 25000,
      pong_timeout_ms: 10000,
      batch_window_ms: 0,
      replay_window_events: 1000,
      limits: { max_frame_bytes: 65536, max_event_bytes: 65536, max_subscriptions: 100, max_messages_per_second: 50 },
      ...over,
    });
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = code;
    if (this.holdClose) {
      this.readyState = 2;
      return;
    }
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code: code ?? 1005, reason: "" }));
  }

  /** The server closes (or the network drops: 1006). */
  serverClose(code: number): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
}

export const event = (seq: number, type = "log.line", data: Record<string, unknown> = { level: "info", message: `l${seq}` }, run = "run-1") => ({
  event_id: `${run}.${seq}`,
  run_id: run,
  seq,
  type,
  time: "2026-11-22T10:00:00.000Z",
  data,
});
