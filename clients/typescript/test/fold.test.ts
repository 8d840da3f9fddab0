import { describe, expect, it } from "vitest";
import { emptySnapshot, fold, SNAPSHOT_RECENT_LOGS } from "../src/fold.js";
import type { JsonObject, RunEvent, RunSnapshot } from "../src/wire.js";

let seq = 0;
const ev = (type: string, data: JsonObject, s = ++seq): RunEvent => ({
  event_id: `e${s}`,
  run_id: "run-1",
  seq: s,
  type,
  time: `2026-11-22T10:00:${String(s % 60).padStart(2, "0")}.000Z`,
  data,
});
const foldAll = (events: RunEvent[], from: RunSnapshot = emptySnapshot("run-1", "e1")) => events.reduce(fold, from);

describe("fold (spec §8.3)", () => {
  it("sets status, status_reason, phase, created_at and updated_at (RW-SNAP-2)", () => {
    seq = 0;
    const s = foldAll([
      ev("run.status", { status: "running" }),
      ev("run.phase", { phase: "a-custom-phase" }),
      ev("run.status", { status: "failed", reason: "tests failed" }),
    ]);
    expect(s).toMatchObject({ as_of_seq: 3, status: "failed", status_reason: "tests failed", phase: "a-custom-phase" });
    expect(s.created_at).toBe("2026-11-22T10:00:01.000Z");
    expect(s.updated_at).toBe("2026-11-22T10:00:03.000Z");
    const t = fold(s, ev("run.status", { status: "running" }));
    expect(t.status_reason).toBeUndefined();
  });

  it("keeps absent progress members and merges labels (RW-TYPE-5, RW-TYPE-7)", () => {
    seq = 0;
    const s = foldAll([
      ev("run.progress", { percent: 10, step: "build", current: 1, total: 9 }),
      ev("run.progress", { percent: 50, step: null }),
      ev("run.metadata", { agent: "a", labels: { x: "1", y: "2" } }),
      ev("run.metadata", { model: "m", labels: { y: "3" } }),
    ]);
    expect(s.progress).toEqual({ percent: 50, step: "build", current: 1, total: 9 });
    expect(s.metadata).toEqual({ agent: "a", model: "m", labels: { x: "1", y: "3" } });
  });

  it("replaces todos, omits them when empty (RW-TYPE-16)", () => {
    seq = 0;
    const s = foldAll([
      ev("todo.updated", { items: [{ id: "1", text: "a", status: "pending" }, { id: "2", text: "b", status: "pending" }] }),
      ev("todo.updated", { items: [{ id: "3", text: "c", status: "done" }] }),
    ]);
    expect(s.todos).toEqual([{ id: "3", text: "c", status: "done" }]);
    expect(fold(s, ev("todo.updated", { items: [] })).todos).toBeUndefined();
  });

  it("tracks open tool calls, artifacts and the last 50 log lines", () => {
    seq = 0;
    const s = foldAll([
      ev("tool.started", { call_id: "c1", tool: "sh" }),
      ev("tool.started", { call_id: "c2", tool: "grep" }),
      ev("tool.finished", { call_id: "c1", ok: true }),
      ev("tool.finished", { call_id: "never-started", ok: true }), // RW-TYPE-11
      ev("artifact.created", { name: "a.txt", uri: "https://example.com/a" }),
      ...Array.from({ length: 60 }, (_, i) => ev("log.line", { level: "info", message: `l${i}` })),
    ]);
    expect(Object.keys(s.open_tool_calls ?? {})).toEqual(["c2"]);
    expect(s.artifacts).toHaveLength(1);
    expect(s.recent_logs).toHaveLength(SNAPSHOT_RECENT_LOGS);
    expect(s.recent_logs?.[0]).toEqual({ level: "info", message: "l10" });
    expect(s.recent_logs?.[49]).toEqual({ level: "info", message: "l59" });
    const done = fold(s, ev("tool.finished", { call_id: "c2" }));
    expect(done.open_tool_calls).toBeUndefined();
  });

  it("changes only as_of_seq and updated_at for other types (RW-SNAP-4)", () => {
    seq = 0;
    const s = foldAll([ev("run.status", { status: "running" })]);
    for (const t of ["agent.message", "agent.thinking", "file.changed", "output.chunk", "acme.custom-thing"]) {
      const n = fold(s, ev(t, { message_id: "m", delta: "x", status: "completed" }));
      const { as_of_seq, updated_at, ...rest } = n;
      const { as_of_seq: _a, updated_at: _u, ...before } = s;
      expect(rest).toEqual(before);
      expect(as_of_seq).toBeGreaterThan(s.as_of_seq);
      expect(updated_at).toBeDefined();
    }
  });

  it("is idempotent under repeats and returns the same object (RW-SNAP-3)", () => {
    seq = 0;
    const e = ev("run.status", { status: "running" });
    const s = fold(emptySnapshot("run-1", "e1"), e);
    expect(fold(s, e)).toBe(s);
    expect(fold(s, { ...e, seq: 0 + 1, data: { status: "completed" } })).toBe(s);
  });

  it("is an immutable value that shares untouched members", () => {
    seq = 0;
    const a = foldAll([ev("run.metadata", { agent: "a" }), ev("log.line", { level: "info", message: "x" })]);
    const b = fold(a, ev("run.status", { status: "running" }));
    expect(Object.isFrozen(b)).toBe(true);
    expect(Object.isFrozen(b.recent_logs)).toBe(true);
    expect(b.metadata).toBe(a.metadata);
    expect(a.status).toBeUndefined();
    expect(() => {
      (b as { status?: string }).status = "x";
    }).toThrow();
  });
});
