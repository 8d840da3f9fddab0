/**
 * The receive state of one subscribed run (spec §8, §9): its cursor, de-duplication,
 * ordering and the gap buffer. Pure logic with no timers and no I/O: the caller passes
 * the current time and acts on what the methods return.
 */

import type { RunEvent, SubscriptionRequest } from "./wire.js";

/** The receive settings of spec §9. */
export interface TrackerOptions {
  /** `GAP_TIMEOUT_MS`: how long out-of-order events wait for the missing ones; default 2,000. */
  gapTimeoutMs?: number;
  /** `GAP_BUFFER_EVENTS`: how many out-of-order events are kept; default 1,000. */
  gapBufferEvents?: number;
}

/** What pushing one event produced. */
export interface PushResult {
  /** The events to deliver now, in `seq` order (`RW-ORDER-6`). */
  readonly deliver: readonly RunEvent[];
  /** The run must be resubscribed from its cursor at once (gap buffer full, `RW-ORDER-5`). */
  readonly resubscribe: boolean;
}

const NOTHING: PushResult = Object.freeze({ deliver: Object.freeze([]), resubscribe: false });

/** One run's cursor and receive state. */
export class RunTracker {
  /** The cursor's epoch: that of the latest `subscribed` or `reset` (`RW-SUB-3`). */
  epoch: string | undefined;
  /** The cursor's seq: the last delivered seq, or the reset's `as_of_seq` (`RW-RESUME-10`). */
  seq: number;
  /** Whether the run is subscribed on the current connection (`RW-SUB-5`). */
  open = false;
  /** Between our `unsubscribe` and the new `subscribed`/`reset` (`RW-ORDER-7`). */
  resyncing = false;
  /** When the oldest unfilled gap times out, in the caller's clock; undefined without a gap. */
  gapDeadline: number | undefined;
  private pending = new Map<number, RunEvent>();
  private readonly gapTimeoutMs: number;
  private readonly gapBufferEvents: number;

  constructor(
    readonly runId: string,
    cursor: { epoch?: string | undefined; seq?: number | undefined } = {},
    opts: TrackerOptions = {},
  ) {
    // RW-RESUME-15: a seq without its epoch is not a cursor; replay from the start.
    this.epoch = cursor.epoch;
    this.seq = cursor.epoch !== undefined ? (cursor.seq ?? 0) : 0;
    this.gapTimeoutMs = opts.gapTimeoutMs ?? 2000;
    this.gapBufferEvents = opts.gapBufferEvents ?? 1000;
  }

  /** The entry of `hello.subscriptions` or `subscribe` for this run (`RW-RECONNECT-8`, `RW-RESUME-11`). */
  request(): SubscriptionRequest {
    const req: SubscriptionRequest = { run_id: this.runId };
    if (this.epoch !== undefined) {
      req.epoch = this.epoch;
      req.after_seq = this.seq;
    }
    return req;
  }

  /** How many out-of-order events wait. */
  get buffered(): number {
    return this.pending.size;
  }

  /** A `subscribed` frame opened the run. */
  onSubscribed(epoch: string, afterSeq: number, now: number): void {
    if (this.epoch !== epoch) {
      // Another epoch is another log: nothing buffered or delivered in the old one
      // counts, and the cursor is the frame's own (RW-RESUME-10).
      this.pending.clear();
      if (this.epoch !== undefined) this.seq = afterSeq;
    }
    this.epoch = epoch;
    this.open = true;
    this.resyncing = false;
    this.gapDeadline = this.pending.size > 0 ? now + this.gapTimeoutMs : undefined;
  }

  /** A `reset` frame: the cursor becomes (`epoch`, `asOfSeq`) and the buffer is dropped (`RW-RESUME-9`). */
  onReset(epoch: string, asOfSeq: number): void {
    this.epoch = epoch;
    this.seq = asOfSeq;
    this.pending.clear();
    this.gapDeadline = undefined;
    this.open = true;
    this.resyncing = false;
  }

  /** The connection ended: subscriptions end with it (spec §5.4). */
  onDisconnect(): void {
    this.open = false;
    this.resyncing = false;
    this.pending.clear();
    this.gapDeadline = undefined;
  }

  /** We are about to unsubscribe and resubscribe from the cursor (`RW-ORDER-5`, `RW-ORDER-7`). */
  beginResync(): void {
    this.open = false;
    this.resyncing = true;
    this.pending.clear();
    this.gapDeadline = undefined;
  }

  /** Whether the gap timer has run out at `now`. */
  gapExpired(now: number): boolean {
    return !this.resyncing && this.gapDeadline !== undefined && now >= this.gapDeadline;
  }

  /**
   * One received event of this run. Drops what was delivered already (`RW-ORDER-4`),
   * delivers what is next together with the buffered events it releases, and buffers
   * what comes early (`RW-ORDER-5`).
   */
  push(e: RunEvent, now: number): PushResult {
    if (!this.open) return NOTHING; // RW-SUB-6, RW-ORDER-7
    const seq = e.seq;
    if (seq <= this.seq || this.pending.has(seq)) return NOTHING;
    if (seq === this.seq + 1) {
      const out = [e];
      this.seq = seq;
      if (this.pending.size > 0) {
        let next = this.pending.get(this.seq + 1);
        while (next !== undefined) {
          this.pending.delete(this.seq + 1);
          out.push(next);
          this.seq += 1;
          next = this.pending.get(this.seq + 1);
        }
        // Events still buffered keep the deadline of the gap that was first seen.
        if (this.pending.size === 0) this.gapDeadline = undefined;
      }
      return { deliver: out, resubscribe: false };
    }
    if (this.pending.size >= this.gapBufferEvents) {
      this.pending.clear();
      this.gapDeadline = undefined;
      return { deliver: [], resubscribe: true };
    }
    this.pending.set(seq, e);
    if (this.gapDeadline === undefined) this.gapDeadline = now + this.gapTimeoutMs;
    return NOTHING;
  }
}
