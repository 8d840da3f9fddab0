import { describe, expect, it } from "vitest";
import { RunTracker } from "../src/tracker.js";
import type { RunEvent } from "../src/wire.js";

const ev = (seq: number, run = "run-1"): RunEvent => ({
  event_id: `${run}.${seq}`,
  run_id: run,
  seq,
  type: "log.line",
  time: "2026-11-22T10:00:00.000Z",
  data: { level: "info", message: `line ${seq}` },
});
const seqs = (r: { deliver: readonly RunEvent[] }) => r.deliver.map((e) => e.seq);

describe("RunTracker (spec §9)", () => {
  it("delivers nothing before the run is subscribed (RW-SUB-6)", () => {
    const t = new RunTracker("run-1");
    expect(seqs(t.push(ev(1), 0))).toEqual([]);
  });

  it("drops duplicates and what the cursor covers (RW-ORDER-4)", () => {
    const t = new RunTracker("run-1", { epoch: "e1", seq: 2 });
    t.onSubscribed("e1", 2, 0);
    expect(seqs(t.push(ev(2), 0))).toEqual([]);
    expect(seqs(t.push(ev(3), 0))).toEqual([3]);
    expect(seqs(t.push(ev(3), 0))).toEqual([]);
    expect(seqs(t.push(ev(1), 0))).toEqual([]);
    expect(t.seq).toBe(3);
    // Dropped, not held as a gap: nothing buffered, no resubscribe pending.
    expect(t.buffered).toBe(0);
    expect(t.gapDeadline).toBeUndefined();
  });

  it("buffers a gap and delivers in seq order once it fills (RW-ORDER-5, RW-ORDER-6)", () => {
    const t = new RunTracker("run-1", {}, { gapTimeoutMs: 100 });
    t.onSubscribed("e1", 0, 0);
    expect(seqs(t.push(ev(1), 0))).toEqual([1]);
    expect(seqs(t.push(ev(3), 10))).toEqual([]);
    expect(seqs(t.push(ev(4), 20))).toEqual([]);
    expect(t.gapDeadline).toBe(110);
    expect(t.gapExpired(109)).toBe(false);
    expect(seqs(t.push(ev(2), 30))).toEqual([2, 3, 4]);
    expect(t.gapDeadline).toBeUndefined();
  });

  it("reports an unfilled gap as expired, and resync replays from the cursor", () => {
    const t = new RunTracker("run-1", {}, { gapTimeoutMs: 100 });
    t.onSubscribed("e1", 0, 0);
    t.push(ev(1), 0);
    t.push(ev(3), 50);
    expect(t.gapExpired(150)).toBe(true);
    t.beginResync();
    expect(t.request()).toEqual({ run_id: "run-1", epoch: "e1", after_seq: 1 });
    expect(seqs(t.push(ev(2), 160))).toEqual([]); // RW-ORDER-7
    t.onSubscribed("e1", 1, 170);
    expect(seqs(t.push(ev(2), 180))).toEqual([2]);
  });

  it("asks for a resubscribe when the gap buffer is full", () => {
    const t = new RunTracker("run-1", {}, { gapBufferEvents: 3 });
    t.onSubscribed("e1", 0, 0);
    for (const s of [3, 4, 5]) expect(t.push(ev(s), 0).resubscribe).toBe(false);
    expect(t.push(ev(6), 0).resubscribe).toBe(true);
    expect(t.buffered).toBe(0);
  });

  it("resets: cursor from the reset, buffer discarded, only later seqs delivered (RW-RESUME-9)", () => {
    const t = new RunTracker("run-1", {}, { gapTimeoutMs: 100 });
    t.onSubscribed("e1", 0, 0);
    t.push(ev(1), 0);
    t.push(ev(5), 0);
    t.onReset("e2", 7);
    expect(t.buffered).toBe(0);
    expect(t.request()).toEqual({ run_id: "run-1", epoch: "e2", after_seq: 7 });
    expect(seqs(t.push(ev(7), 0))).toEqual([]);
    expect(seqs(t.push(ev(8), 0))).toEqual([8]);
  });

  it("never sends a seq without its epoch (RW-RESUME-11, RW-RESUME-15)", () => {
    expect(new RunTracker("run-1", { seq: 9 }).request()).toEqual({ run_id: "run-1" });
    expect(new RunTracker("run-1", { epoch: "e1", seq: 9 }).request()).toEqual({ run_id: "run-1", epoch: "e1", after_seq: 9 });
    const t = new RunTracker("run-1");
    t.onSubscribed("e3", 0, 0);
    expect(t.request()).toEqual({ run_id: "run-1", epoch: "e3", after_seq: 0 }); // RW-SUB-3
  });
});
