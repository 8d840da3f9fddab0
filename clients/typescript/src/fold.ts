/**
 * Folding events into run state, by the table of spec §8.3 (`RW-SNAP-2`, `RW-SNAP-3`,
 * `RW-SNAP-4`, `RW-TYPE-5`, `RW-TYPE-7`, `RW-TYPE-16`).
 *
 * A snapshot is an immutable value: `fold` returns a new frozen snapshot that shares the
 * members the event did not touch, or the same object when the event changes nothing, so
 * that `prev === next` tells a UI there is nothing to render.
 */

import type { Json, JsonObject, RunEvent, RunSnapshot } from "./wire.js";

/** How many `log.line` payloads a snapshot keeps (`SNAPSHOT_RECENT_LOGS`, spec §8.3). */
export const SNAPSHOT_RECENT_LOGS = 50;

const METADATA_MEMBERS = ["agent", "model", "project", "title"] as const;

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
  }
  return v;
}

/** The state of a run with no events (spec §8.3: only `run_id`, `epoch` and `as_of_seq`). */
export function emptySnapshot(runId: string, epoch: string): RunSnapshot {
  return Object.freeze({ run_id: runId, epoch, as_of_seq: 0 });
}

/** A snapshot received from the server (a `reset`), frozen so that it can be shared. */
export function freezeSnapshot(s: RunSnapshot): RunSnapshot {
  return deepFreeze(structuredCloneJson(s));
}

function structuredCloneJson<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/** The members of `data` that are present: `null` counts as absent (`RW-CONV-7`). */
function present(data: JsonObject): [string, Json][] {
  return Object.entries(data).filter(([, v]) => v !== null && v !== undefined);
}

/**
 * Folds one event onto a snapshot. Returns `snap` itself, unchanged, when the event's
 * `seq` is at most `as_of_seq` (`RW-SNAP-3`); otherwise a new frozen snapshot.
 */
export function fold(snap: RunSnapshot, e: RunEvent): RunSnapshot {
  if (e.seq <= snap.as_of_seq) return snap;
  const next: Record<string, unknown> = { ...snap };
  next.as_of_seq = e.seq;
  next.updated_at = e.time;
  if (snap.created_at === undefined) next.created_at = e.time;
  const d = e.data;
  switch (e.type) {
    case "run.status":
      next.status = d.status;
      if (typeof d.reason === "string") next.status_reason = d.reason;
      else next.status_reason = undefined;
      break;
    case "run.progress": {
      // RW-TYPE-5: each member carried replaces the stored one; absent ones stay.
      const progress: JsonObject = { ...(snap.progress ?? {}) };
      for (const [k, v] of present(d)) progress[k] = deepFreeze(v);
      next.progress = Object.freeze(progress);
      break;
    }
    case "run.metadata": {
      // RW-TYPE-7: agent/model/project/title replaced when carried, labels merged.
      const meta: JsonObject = { ...(snap.metadata ?? {}) };
      for (const k of METADATA_MEMBERS) {
        const v = d[k];
        if (v !== undefined && v !== null) meta[k] = v;
      }
      const labels = d.labels;
      if (labels !== null && typeof labels === "object" && !Array.isArray(labels)) {
        const prev = meta.labels;
        const merged: JsonObject =
          prev !== null && typeof prev === "object" && !Array.isArray(prev) ? { ...prev } : {};
        for (const [k, v] of Object.entries(labels)) merged[k] = v;
        if (Object.keys(merged).length > 0) meta.labels = Object.freeze(merged);
      }
      next.metadata = Object.freeze(meta);
      break;
    }
    case "run.phase":
      next.phase = d.phase;
      break;
    case "todo.updated": {
      // RW-TYPE-16: the list is replaced, never merged; omitted when empty.
      const items = d.items;
      if (Array.isArray(items) && items.length > 0) next.todos = deepFreeze([...items]);
      else next.todos = undefined;
      break;
    }
    case "artifact.created":
      next.artifacts = Object.freeze([...(snap.artifacts ?? []), deepFreeze(d)]);
      break;
    case "tool.started": {
      const id = d.call_id;
      if (typeof id === "string") {
        next.open_tool_calls = Object.freeze({ ...(snap.open_tool_calls ?? {}), [id]: deepFreeze(d) });
      }
      break;
    }
    case "tool.finished": {
      // RW-TYPE-11: a call id that matches no open call changes nothing but the seq.
      const id = d.call_id;
      const calls = snap.open_tool_calls;
      if (typeof id === "string" && calls !== undefined && Object.hasOwn(calls, id)) {
        const rest: Record<string, JsonObject> = { ...calls };
        delete rest[id];
        if (Object.keys(rest).length > 0) next.open_tool_calls = Object.freeze(rest);
        else next.open_tool_calls = undefined;
      }
      break;
    }
    case "log.line": {
      const logs = snap.recent_logs ?? [];
      const kept = logs.length >= SNAPSHOT_RECENT_LOGS ? logs.slice(logs.length - SNAPSHOT_RECENT_LOGS + 1) : [...logs];
      kept.push(deepFreeze(d));
      next.recent_logs = Object.freeze(kept);
      break;
    }
    default:
      // RW-SNAP-4: every other type changes only as_of_seq and updated_at.
      break;
  }
  return Object.freeze(dropUndefined(next)) as RunSnapshot;
}

/** Removes members set to undefined (absent members are omitted, spec §8.3) without `delete`. */
function dropUndefined(o: Record<string, unknown>): Record<string, unknown> {
  if (o.status_reason !== undefined || !("status_reason" in o)) {
    if (o.todos !== undefined || !("todos" in o)) {
      if (o.open_tool_calls !== undefined || !("open_tool_calls" in o)) return o;
    }
  }
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(o)) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
