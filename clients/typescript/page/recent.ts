/**
 * The runs this browser has opened, newest first, kept in `localStorage`.
 *
 * The protocol has no endpoint that lists runs (spec §4 reads one run by its id), so the
 * page lists the runs it was asked to show, with the title and status it last saw.
 */

/** One remembered run. */
export interface RecentRun {
  readonly run_id: string;
  readonly title?: string;
  readonly status?: string;
  /** When the page last showed it, as an ISO 8601 time. */
  readonly seen_at: string;
}

const KEY = "runwire.page.recent-runs";
/** How many runs the list keeps. */
export const RECENT_MAX = 20;

function storage(): Storage | undefined {
  try {
    return globalThis.localStorage;
  } catch {
    return undefined; // storage disabled: the list is empty
  }
}

/** The remembered runs, newest first; entries that do not parse are dropped. */
export function loadRecent(): RecentRun[] {
  const raw = storage()?.getItem(KEY);
  if (raw == null) return [];
  try {
    const parsed: unknown = JSON.parse(raw);
    if (!Array.isArray(parsed)) return [];
    return parsed.filter(
      (r): r is RecentRun =>
        typeof r === "object" && r !== null && typeof r.run_id === "string" && typeof r.seen_at === "string",
    );
  } catch {
    return [];
  }
}

/** Puts a run at the top of the list (or updates it there) and returns the new list. */
export function remember(run: RecentRun): RecentRun[] {
  const list = [run, ...loadRecent().filter((r) => r.run_id !== run.run_id)].slice(0, RECENT_MAX);
  try {
    storage()?.setItem(KEY, JSON.stringify(list));
  } catch {
    // A full storage loses the list, never the page.
  }
  return list;
}
