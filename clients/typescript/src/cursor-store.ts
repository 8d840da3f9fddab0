/**
 * Persisted run state, so that a page refresh resumes instead of replaying (spec §8.1,
 * `RW-RESUME-10`). What is stored is the run's folded snapshot: its `epoch` and
 * `as_of_seq` are the cursor, and the state itself survives the refresh with it.
 */

import type { RunSnapshot } from "./wire.js";

/** Where the client keeps each run's state between page loads. */
export interface CursorStore {
  /** The state stored for a run, or undefined. */
  load(runId: string): RunSnapshot | undefined;
  /** Stores a run's state (called at most every `persistIntervalMs` per run, and on close). */
  save(runId: string, snapshot: RunSnapshot): void;
  /** Forgets a run. */
  remove(runId: string): void;
}

/** A store in memory: state lives as long as the client's page. */
export class MemoryCursorStore implements CursorStore {
  private readonly map = new Map<string, RunSnapshot>();

  load(runId: string): RunSnapshot | undefined {
    return this.map.get(runId);
  }

  save(runId: string, snapshot: RunSnapshot): void {
    this.map.set(runId, snapshot);
  }

  remove(runId: string): void {
    this.map.delete(runId);
  }
}

/** The subset of the Web Storage API the store needs (`sessionStorage`, `localStorage`). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

function isSnapshot(v: unknown, runId: string): v is RunSnapshot {
  if (typeof v !== "object" || v === null) return false;
  const s = v as Record<string, unknown>;
  return (
    s.run_id === runId &&
    typeof s.epoch === "string" &&
    typeof s.as_of_seq === "number" &&
    Number.isSafeInteger(s.as_of_seq) &&
    s.as_of_seq >= 0
  );
}

/**
 * A store in Web Storage: `sessionStorage` (the default: one state per tab, kept across
 * refreshes) or `localStorage` (shared by the origin's tabs, kept across restarts).
 * Entries that do not parse, or belong to another run, are ignored; a full storage
 * (quota) loses the save, never the client.
 */
export class WebStorageCursorStore implements CursorStore {
  constructor(
    private readonly storage: StorageLike = globalThis.sessionStorage,
    private readonly prefix = "runwire:run:",
  ) {}

  load(runId: string): RunSnapshot | undefined {
    let text: string | null;
    try {
      text = this.storage.getItem(this.prefix + runId);
    } catch {
      return undefined;
    }
    if (text === null) return undefined;
    try {
      const v: unknown = JSON.parse(text);
      return isSnapshot(v, runId) ? v : undefined;
    } catch {
      return undefined;
    }
  }

  save(runId: string, snapshot: RunSnapshot): void {
    try {
      this.storage.setItem(this.prefix + runId, JSON.stringify(snapshot));
    } catch {
      // Quota or privacy mode: the run will replay after a refresh instead of resuming.
    }
  }

  remove(runId: string): void {
    try {
      this.storage.removeItem(this.prefix + runId);
    } catch {
      // as above
    }
  }
}
