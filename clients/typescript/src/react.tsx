/**
 * `@runwire/client/react`: React binding of the Runwire client.
 *
 * ```tsx
 * const client = new RunwireClient({ url: "wss://runs.example.com/v1/stream", cursorStore: new WebStorageCursorStore() });
 * <RunwireProvider client={client}><BuildPage runId="run-42" /></RunwireProvider>
 *
 * function BuildPage({ runId }: { runId: string }) {
 *   const { snapshot, connection, error } = useRun(runId);
 *   return <><ConnectionStatus /><p>{snapshot?.status ?? "waiting"}</p></>;
 * }
 * ```
 */

import { createContext, useContext, useEffect, useState, useSyncExternalStore, type ReactNode } from "react";
import type { ConnectionState, RunwireError } from "./client.js";
import type { RunwireClientLike as RunwireClient } from "./shared.js";
import type { RunSnapshot } from "./wire.js";

const ClientContext = createContext<RunwireClient | null>(null);

/** Provides a client to the hooks below, and starts it when mounted. The application owns (and closes) it. */
export function RunwireProvider({ client, children }: { client: RunwireClient; children?: ReactNode }): ReactNode {
  useEffect(() => {
    if (client.state.status === "idle") void client.start();
  }, [client]);
  return <ClientContext.Provider value={client}>{children}</ClientContext.Provider>;
}

/** The client of the nearest `RunwireProvider`. */
export function useRunwireClient(): RunwireClient {
  const client = useContext(ClientContext);
  if (client === null) throw new Error("useRunwireClient: no <RunwireProvider> above this component");
  return client;
}

/** How many mounted hooks want each run of each client: the last one to unmount unsubscribes. */
const holders = new WeakMap<RunwireClient, Map<string, number>>();

function hold(client: RunwireClient, runId: string): () => void {
  let counts = holders.get(client);
  if (counts === undefined) holders.set(client, (counts = new Map()));
  const n = counts.get(runId) ?? 0;
  counts.set(runId, n + 1);
  if (n === 0) client.subscribe(runId);
  return () => {
    const left = (counts.get(runId) ?? 1) - 1;
    if (left > 0) {
      counts.set(runId, left);
    } else {
      counts.delete(runId);
      client.unsubscribe(runId);
    }
  };
}

/** The client's connection state, re-rendering on every change. */
export function useConnectionState(): ConnectionState {
  const client = useRunwireClient();
  return useSyncExternalStore(
    (onChange) => client.on("state", onChange),
    () => client.state,
    () => client.state,
  );
}

/** What `useRun` returns. */
export interface RunView {
  /** The run's folded state (spec §8.3), an immutable value; undefined until the run is known. */
  readonly snapshot: RunSnapshot | undefined;
  /** The connection state of the client. */
  readonly connection: ConnectionState;
  /** The last error that concerns this run: one naming it, or one of the connection. */
  readonly error: RunwireError | undefined;
}

/** Subscribes a run while the component is mounted and returns its live state. */
export function useRun(runId: string): RunView {
  const client = useRunwireClient();
  useEffect(() => hold(client, runId), [client, runId]);
  const snapshot = useSyncExternalStore(
    (onChange) => client.on("snapshot", (id) => id === runId && onChange()),
    () => client.getSnapshot(runId),
    () => client.getSnapshot(runId),
  );
  const connection = useConnectionState();
  const [error, setError] = useState<RunwireError | undefined>(undefined);
  useEffect(() => {
    setError(undefined);
    return client.on("error", (e) => {
      if (e.runId === undefined || e.runId === runId) setError(e);
    });
  }, [client, runId]);
  return { snapshot, connection, error };
}

/** Seconds left until `at` (a `Date.now()` time), ticking once a second while positive. */
function useSecondsUntil(at: number | undefined): number | undefined {
  const [, tick] = useState(0);
  useEffect(() => {
    if (at === undefined) return;
    const id = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(id);
  }, [at]);
  return at === undefined ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** Props of `ConnectionStatus`. */
export interface ConnectionStatusProps {
  /** Class name of the outer element; it also carries `data-status`. */
  className?: string;
}

/**
 * A small connection indicator: "Connected", "Connecting…", "Reconnecting in N s" (the
 * backoff of spec §12 counting down), "Connection failed: …" with a retry button, or
 * "Disconnected".
 */
export function ConnectionStatus({ className }: ConnectionStatusProps): ReactNode {
  const client = useRunwireClient();
  const state = useConnectionState();
  const seconds = useSecondsUntil(state.status === "reconnecting" ? state.retryAt : undefined);
  let text: string;
  let retry = false;
  switch (state.status) {
    case "connected":
      text = "Connected";
      break;
    case "connecting":
    case "idle":
      text = "Connecting…";
      break;
    case "reconnecting":
      text = `Reconnecting in ${seconds ?? 0} s`;
      break;
    case "failed":
      text = `Connection failed: ${state.error.message}`;
      retry = true;
      break;
    case "closed":
      text = "Disconnected";
      break;
  }
  return (
    <span className={className} data-status={state.status} role="status" aria-live="polite">
      {text}
      {retry && (
        <>
          {" "}
          <button type="button" onClick={() => client.retry()}>
            Retry now
          </button>
        </>
      )}
    </span>
  );
}
