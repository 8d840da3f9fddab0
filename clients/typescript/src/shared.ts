/**
 * One connection for all the tabs of an origin: `SharedRunwireClient`.
 *
 * The tabs elect a leader with the Web Locks API (the tab that holds the lock
 * `<channel>:leader`); the leader runs the one `RunwireClient` and its WebSocket, holds
 * the union of the runs every tab wants, and relays states, events, resets, snapshots and
 * errors to the other tabs over a `BroadcastChannel`. When the leader's tab closes, the
 * browser releases its lock and the next tab takes over: it resumes every run from the
 * snapshots it was relayed (their `epoch` and `as_of_seq` are the cursors), so nothing is
 * replayed and nothing is missed. Where either API is missing the client runs alone in its
 * tab, as a plain `RunwireClient` (the fallback).
 *
 * Spec-wise the leader is one client (spec §12 applies to its one connection,
 * `RW-RECONNECT-9`); the relaying is the application's side of it.
 */

import {
  RunwireClient,
  type ClientEvents,
  type ClientOptions,
  type ConnectionState,
  type RunwireError,
} from "./client.js";
import type { ResetMessage, RunEvent, RunSnapshot, SubscribedMessage } from "./wire.js";

/** What the React binding and applications need of a client. */
export interface RunwireClientLike {
  on<K extends keyof ClientEvents>(kind: K, fn: ClientEvents[K]): () => void;
  readonly state: ConnectionState;
  getSnapshot(runId: string): RunSnapshot | undefined;
  readonly runIds: string[];
  subscribe(runId: string): void;
  unsubscribe(runId: string): void;
  start(): Promise<void>;
  retry(): void;
  close(): Promise<void>;
}

/** The subset of the Web Locks API used (`navigator.locks`). */
export interface LockManagerLike {
  request(name: string, options: { signal?: AbortSignal }, callback: () => Promise<void>): Promise<unknown>;
}

/** The subset of `BroadcastChannel` used. */
export interface BroadcastChannelLike {
  onmessage: ((ev: { data: unknown }) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
}

/** Settings of a shared client: those of `RunwireClient`, plus where the tabs meet. */
export interface SharedClientOptions extends ClientOptions {
  /** The channel and lock name; default `runwire:` + the URL. */
  channelName?: string;
  /** Default `globalThis.BroadcastChannel`. */
  BroadcastChannel?: new (name: string) => BroadcastChannelLike;
  /** Default `navigator.locks`. */
  locks?: LockManagerLike;
}

type Relay =
  | { t: "want"; tab: string; runs: string[] }
  | { t: "bye"; tab: string }
  | { t: "retry" }
  | { t: "leader"; tab: string }
  | { t: "state"; state: ConnectionState }
  | { t: "subscribed"; msg: SubscribedMessage }
  | { t: "event"; event: RunEvent }
  | { t: "reset"; msg: ResetMessage }
  | { t: "snapshot"; runId: string; snapshot: RunSnapshot }
  | { t: "error"; error: RunwireError };

type Listeners = { [K in keyof ClientEvents]: Set<ClientEvents[K]> };

function freeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) freeze((v as Record<string, unknown>)[k]);
  }
  return v;
}

/** A Runwire client whose one connection is shared by every tab of the origin. */
export class SharedRunwireClient implements RunwireClientLike {
  /** This tab's id on the channel. */
  readonly tabId = Math.random().toString(36).slice(2);
  private readonly opts: SharedClientOptions;
  private readonly wanted = new Set<string>();
  private readonly snapshots = new Map<string, RunSnapshot>();
  private readonly others = new Map<string, Set<string>>();
  private readonly listeners: Listeners = {
    state: new Set(),
    subscribed: new Set(),
    event: new Set(),
    reset: new Set(),
    snapshot: new Set(),
    error: new Set(),
  };
  private stateValue: ConnectionState = { status: "idle" };
  private channel: BroadcastChannelLike | undefined;
  private inner: RunwireClient | undefined;
  private role: "idle" | "follower" | "leader" | "solo" = "idle";
  private abort: AbortController | undefined;
  private releaseLock: (() => void) | undefined;
  private stopped: Promise<void> | undefined;
  private markStopped: (() => void) | undefined;

  constructor(opts: SharedClientOptions) {
    this.opts = opts;
  }

  /** Whether this tab holds the connection (`leader`), relays it (`follower`), or runs alone (`solo`). */
  get mode(): "idle" | "follower" | "leader" | "solo" {
    return this.role;
  }

  on<K extends keyof ClientEvents>(kind: K, fn: ClientEvents[K]): () => void {
    this.listeners[kind].add(fn);
    return () => {
      this.listeners[kind].delete(fn);
    };
  }

  get state(): ConnectionState {
    return this.inner?.state ?? this.stateValue;
  }

  getSnapshot(runId: string): RunSnapshot | undefined {
    return this.inner !== undefined ? this.inner.getSnapshot(runId) : this.snapshots.get(runId);
  }

  get runIds(): string[] {
    return [...this.wanted];
  }

  subscribe(runId: string): void {
    if (this.wanted.has(runId)) return;
    this.wanted.add(runId);
    this.syncWants();
  }

  unsubscribe(runId: string): void {
    if (!this.wanted.delete(runId)) return;
    this.syncWants();
  }

  /** Joins the tabs (or runs alone without the APIs). Resolves when this tab's client is closed. */
  start(): Promise<void> {
    if (this.stopped !== undefined) return this.stopped;
    this.stopped = new Promise((r) => (this.markStopped = r));
    const BC = this.opts.BroadcastChannel ?? (globalThis as { BroadcastChannel?: SharedClientOptions["BroadcastChannel"] }).BroadcastChannel;
    const locks = this.opts.locks ?? (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks;
    if (BC === undefined || locks === undefined) {
      this.role = "solo";
      this.runInner(false);
      return this.stopped;
    }
    const name = this.opts.channelName ?? `runwire:${this.opts.url}`;
    this.channel = new BC(name);
    this.channel.onmessage = (ev) => this.onRelay(ev.data as Relay);
    this.role = "follower";
    this.post({ t: "want", tab: this.tabId, runs: [...this.wanted] });
    this.abort = new AbortController();
    locks
      .request(`${name}:leader`, { signal: this.abort.signal }, () => {
        return new Promise<void>((release) => {
          this.releaseLock = release;
          this.becomeLeader();
        });
      })
      .catch(() => {
        // aborted by close() while waiting for the lock
      });
    return this.stopped;
  }

  retry(): void {
    if (this.inner !== undefined) this.inner.retry();
    else this.post({ t: "retry" });
  }

  async close(): Promise<void> {
    this.abort?.abort();
    this.post({ t: "bye", tab: this.tabId });
    const inner = this.inner;
    this.inner = undefined;
    if (inner !== undefined) await inner.close();
    this.channel?.close();
    this.channel = undefined;
    this.releaseLock?.();
    this.releaseLock = undefined;
    this.role = "idle";
    this.stateValue = { status: "closed" };
    this.emit("state", this.stateValue);
    this.markStopped?.();
  }

  // -- leader ---------------------------------------------------------------------------

  private becomeLeader(): void {
    if (this.role !== "follower") return;
    this.role = "leader";
    this.runInner(true);
    this.post({ t: "leader", tab: this.tabId });
  }

  /** Starts the one real client in this tab; relays everything when `relay`. */
  private runInner(relay: boolean): void {
    const inner = new RunwireClient(this.opts);
    this.inner = inner;
    const forward = <K extends keyof ClientEvents>(kind: K, wrap: (...a: Parameters<ClientEvents[K]>) => Relay | undefined) =>
      inner.on(kind, ((...args: Parameters<ClientEvents[K]>) => {
        if (this.inner !== inner) return;
        const runId = runOf(kind, args);
        if (runId === undefined || this.wanted.has(runId)) this.emit(kind, ...args);
        if (relay) {
          const m = wrap(...args);
          if (m !== undefined) this.post(m);
        }
      }) as ClientEvents[K]);
    forward("state", (state) => ({ t: "state", state }));
    forward("subscribed", (msg) => ({ t: "subscribed", msg }));
    forward("event", (event) => ({ t: "event", event }));
    forward("reset", (msg) => ({ t: "reset", msg }));
    forward("snapshot", (runId, snapshot) => ({ t: "snapshot", runId, snapshot }));
    forward("error", (error) => ({ t: "error", error }));
    this.syncWants();
    void inner.start();
  }

  /** The leader wants the union of every tab's runs; a follower tells the leader its own. */
  private syncWants(): void {
    const inner = this.inner;
    if (inner === undefined) {
      if (this.role === "follower") this.post({ t: "want", tab: this.tabId, runs: [...this.wanted] });
      return;
    }
    const union = new Set(this.wanted);
    for (const runs of this.others.values()) for (const r of runs) union.add(r);
    for (const runId of union) {
      if (inner.runIds.includes(runId)) continue;
      // A follower that becomes leader resumes from what it was relayed.
      const snap = this.snapshots.get(runId);
      if (snap !== undefined) inner.subscribe(runId, snap);
      else inner.subscribe(runId);
      const now = inner.getSnapshot(runId);
      if (now !== undefined && this.role === "leader") this.post({ t: "snapshot", runId, snapshot: now });
    }
    for (const runId of inner.runIds) if (!union.has(runId)) inner.unsubscribe(runId);
  }

  // -- the channel ----------------------------------------------------------------------

  private post(m: Relay): void {
    try {
      this.channel?.postMessage(m);
    } catch {
      // a closed channel: nothing to tell
    }
  }

  private onRelay(m: Relay): void {
    if (this.role === "leader") return this.onRelayAsLeader(m);
    if (this.role !== "follower") return;
    switch (m.t) {
      case "leader":
        // A new leader: tell it what this tab wants.
        this.post({ t: "want", tab: this.tabId, runs: [...this.wanted] });
        return;
      case "state":
        this.stateValue = freeze(m.state);
        this.emit("state", this.stateValue);
        return;
      case "snapshot":
        this.snapshots.set(m.runId, freeze(m.snapshot));
        if (this.wanted.has(m.runId)) this.emit("snapshot", m.runId, this.snapshots.get(m.runId)!);
        return;
      case "event":
        if (this.wanted.has(m.event.run_id)) this.emit("event", freeze(m.event));
        return;
      case "reset":
        if (this.wanted.has(m.msg.run_id)) this.emit("reset", freeze(m.msg));
        return;
      case "subscribed":
        if (this.wanted.has(m.msg.run_id)) this.emit("subscribed", freeze(m.msg));
        return;
      case "error":
        if (m.error.runId === undefined || this.wanted.has(m.error.runId)) this.emit("error", freeze(m.error));
        return;
      default:
        return;
    }
  }

  private onRelayAsLeader(m: Relay): void {
    switch (m.t) {
      case "want":
        this.others.set(m.tab, new Set(m.runs));
        this.syncWants();
        this.post({ t: "state", state: this.state });
        for (const runId of m.runs) {
          const snap = this.inner?.getSnapshot(runId);
          if (snap !== undefined) this.post({ t: "snapshot", runId, snapshot: snap });
        }
        return;
      case "bye":
        this.others.delete(m.tab);
        this.syncWants();
        return;
      case "retry":
        this.inner?.retry();
        return;
      default:
        return;
    }
  }

  private emit<K extends keyof ClientEvents>(kind: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const fn of this.listeners[kind]) {
      try {
        (fn as (...a: Parameters<ClientEvents[K]>) => void)(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}

/** The run a listener call is about, if any. */
function runOf(kind: keyof ClientEvents, args: unknown[]): string | undefined {
  switch (kind) {
    case "event":
      return (args[0] as RunEvent).run_id;
    case "snapshot":
      return args[0] as string;
    case "reset":
    case "subscribed":
      return (args[0] as { run_id: string }).run_id;
    case "error":
      return (args[0] as RunwireError).runId;
    default:
      return undefined;
  }
}
