/**
 * The Runwire client: one WebSocket connection that multiplexes the application's runs
 * (spec §5–§16), with resume cursors, de-duplication, ordering, gap recovery, heartbeat
 * answers, liveness, reconnect with jittered backoff and folded run state.
 *
 * It runs wherever a WHATWG `WebSocket` exists (browsers, Deno, Node 22+), or with any
 * constructor of that shape passed as `WebSocket` (the `ws` package under Node 20).
 */

import { Backoff, closeClass, randomSeed, SeededRandom, type CloseClass } from "./backoff.js";
import type { CursorStore } from "./cursor-store.js";
import { decodeFrame, DecodeError } from "./decode.js";
import { emptySnapshot, fold, freezeSnapshot } from "./fold.js";
import { RunTracker } from "./tracker.js";
import {
  PROTOCOL_VERSIONS,
  TERMINAL_STATUSES,
  type ClientMessage,
  type ErrorMessage,
  type KnownServerMessage,
  type Limits,
  type ResetMessage,
  type RunEvent,
  type RunSnapshot,
  type SubscribedMessage,
  type SubscriptionRequest,
  type WelcomeMessage,
} from "./wire.js";

/** The connection state the client reports (`RW-RECONNECT-10`, spec Appendix A.1). */
export type ConnectionState =
  | { readonly status: "idle" }
  | { readonly status: "connecting"; readonly attempt: number }
  | { readonly status: "connected" }
  | {
      readonly status: "reconnecting";
      readonly attempt: number;
      readonly delayMs: number;
      /** When the next attempt starts, in `Date.now()` time (for "reconnecting in N s"). */
      readonly retryAt: number;
      readonly closeCode?: number;
    }
  | { readonly status: "failed"; readonly closeCode?: number; readonly error: RunwireError }
  | { readonly status: "closed" };

/** An error reported to the application (`RW-ERROR-5`, `RW-ERROR-7`). */
export interface RunwireError {
  /** A server error code as received, or one of the client's own (`RW-ERROR-7`). */
  readonly code: string;
  readonly message: string;
  /** The client stopped for good. */
  readonly terminal: boolean;
  readonly runId?: string;
  readonly closeCode?: number;
  readonly supportedVersions?: readonly string[];
  /** On `reconnect_failed`: the code of the last `error` frame seen (`RW-RECONNECT-3`). */
  readonly lastErrorCode?: string;
}

/** A cursor the application persisted itself: `seq` without `epoch` is replayed from 0 (`RW-RESUME-15`). */
export interface Cursor {
  readonly epoch?: string;
  readonly seq?: number;
}

/** The listeners of a client. */
export interface ClientEvents {
  /** The connection state changed. */
  state: (state: ConnectionState) => void;
  /** A subscription opened (informational). */
  subscribed: (msg: SubscribedMessage) => void;
  /** An event is delivered: once, in `seq` order, per run. */
  event: (event: RunEvent) => void;
  /** The run's state must be rebuilt from the snapshot (`RW-RESUME-9`). */
  reset: (msg: ResetMessage) => void;
  /** A run's folded state changed (after `event`, `reset`, or a new subscription epoch). */
  snapshot: (runId: string, snapshot: RunSnapshot) => void;
  /** An error reached the application. */
  error: (error: RunwireError) => void;
}

/** Anything shaped like the WHATWG `WebSocket` constructor. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** The constructor of a `WebSocketLike`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** A token, or a provider asked before every connection attempt (`RW-AUTH-9`). */
export type TokenSource = string | (() => string | undefined | Promise<string | undefined>);

/** Client settings; the timers default to spec Appendix B. */
export interface ClientOptions {
  /** The stream endpoint, e.g. `wss://runs.example.com/v1/stream`. Never put a token in it (`RW-AUTH-1`). */
  url: string;
  /** Sent in `hello.token`; a function is called before every attempt. */
  token?: TokenSource;
  /** Versions offered in `hello` (`RW-VERSION-1`); default this client's own. */
  versions?: readonly string[];
  /** Reported in `hello.client`. */
  clientInfo?: { name: string; version: string };
  /** `base`, default 500 ms. */
  reconnectBaseMs?: number;
  /** `factor`, default 2. */
  reconnectFactor?: number;
  /** `cap`, default 20,000 ms. */
  reconnectCapMs?: number;
  /** `RECONNECT_MAX_ATTEMPTS`, default 10. */
  maxAttempts?: number;
  /** `STABLE_SESSION_MS`, default 5,000. */
  stableSessionMs?: number;
  /** `LIVENESS_GRACE_MS`, default 10,000. */
  livenessGraceMs?: number;
  /** `GAP_TIMEOUT_MS`, default 2,000. */
  gapTimeoutMs?: number;
  /** `GAP_BUFFER_EVENTS`, default 1,000. */
  gapBufferEvents?: number;
  /** `WELCOME_TIMEOUT_MS`, default 10,000. */
  welcomeTimeoutMs?: number;
  /** Seed of the jitter (0 to 2^64 − 1); default random. */
  seed?: bigint;
  /** The WebSocket constructor; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Where run state is kept across page loads; default none. */
  cursorStore?: CursorStore;
  /** How often a run's state is saved at most, in ms; default 250. */
  persistIntervalMs?: number;
  /** Close with 1000 once every run reached a terminal status or was refused (`RW-CONN-11`). */
  closeWhenDone?: boolean;
  /**
   * Listen to the page's `online`, `visibilitychange` and `pagehide` events (default: when
   * `window` exists): a throttled background tab catches up on an overdue reconnect or a
   * silent connection at once, and state is saved before the page goes away.
   */
  pageEvents?: boolean;
  /**
   * Awaited after each `connecting` and `reconnecting` state before the client acts on it.
   * For hosts that must record a state change before the wait or the attempt starts
   * (a conformance adapter relaying states out of a browser page).
   */
  stateBarrier?: (state: ConnectionState) => void | Promise<void>;
  /** A monotonic clock in ms for every deadline; default `performance.now`. */
  clock?: () => number;
}

/** The state of one wanted run. */
interface RunEntry {
  readonly tracker: RunTracker;
  snapshot: RunSnapshot | undefined;
  terminal: boolean;
  savedAt: number;
  saveTimer: ReturnType<typeof setTimeout> | undefined;
}

/** How a connection ended. */
interface Ending {
  readonly cls: CloseClass | "closed";
  readonly closeCode?: number;
  readonly retryAfterMs?: number;
  readonly error?: RunwireError;
}

/** One connection attempt and the session it may open. */
interface Session {
  readonly ws: WebSocketLike;
  opened: boolean;
  welcome: WelcomeMessage | undefined;
  welcomedAt: number | undefined;
  lastFrameAt: number;
  budgetMs: number;
  pendingError: ErrorMessage | undefined;
  ended: boolean;
  closedByUs: boolean;
  watchdog: ReturnType<typeof setTimeout> | undefined;
  watchdogAt: number;
  /** No silence is declared before this clock time (after a stall of our own). */
  silenceGraceUntil: number;
  /** The `lastFrameAt` the stall grace was last granted for (once per silence). */
  stallGraceFor: number | undefined;
  closed: Promise<void>;
  markClosed: () => void;
  rate: number;
  tokens: number;
  tokensAt: number;
  queue: string[];
  drainTimer: ReturnType<typeof setTimeout> | undefined;
  /** The last `error` event of the socket (`ws` says why it failed a connection). */
  lastError?: unknown;
  /** The runs requested on this connection (RW-LIMIT-5 counts them against `max_subscriptions`). */
  requested: Set<string>;
  /** Subscription entries that did not fit in `hello`, sent after `welcome`. */
  deferred: SubscriptionRequest[];
}

/** A timer this late (ms) means our event loop was stalled: see `checkDeadlines`. */
const STALL_MS = 20;

/** How long a closing socket may take to finish its closing handshake before we go on. */
const CLOSE_HANDSHAKE_MS = 1000;

const encoder = new TextEncoder();
const byteLength = (text: string): number => encoder.encode(text).length;

const monotonic = (): number => (typeof performance !== "undefined" ? performance.now() : Date.now());

type Listeners = { [K in keyof ClientEvents]: Set<ClientEvents[K]> };

/** The Runwire client. Create it, `subscribe` runs, `start` it; `close` it when done. */
export class RunwireClient {
  private readonly opts: ClientOptions;
  private readonly backoff: Backoff;
  private readonly runs = new Map<string, RunEntry>();
  private readonly refused = new Set<string>();
  private readonly listeners: Listeners = {
    state: new Set(),
    subscribed: new Set(),
    event: new Set(),
    reset: new Set(),
    snapshot: new Set(),
    error: new Set(),
  };
  private stateValue: ConnectionState = { status: "idle" };
  /** The limits of the last `welcome`; Appendix B's defaults before the first one. */
  private limits: Limits = { max_frame_bytes: 65_536, max_event_bytes: 65_536, max_subscriptions: 100, max_messages_per_second: 50 };
  private session: Session | undefined;
  private failures = 0;
  private attemptsMade = 0;
  private lastErrorCode: string | undefined;
  private lastCloseCode: number | undefined;
  private stopping = false;
  private waitTimer: ReturnType<typeof setTimeout> | undefined;
  private waitDue = 0;
  private waitResolve: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private detachPage: (() => void) | undefined;
  /** The seed of the jitter, for replaying a run of the client. */
  readonly seed: bigint;
  private readonly clock: () => number;

  constructor(opts: ClientOptions) {
    this.opts = opts;
    this.seed = opts.seed ?? randomSeed();
    this.clock = opts.clock ?? monotonic;
    const backoffOpts: { baseMs?: number; factor?: number; capMs?: number } = {};
    if (opts.reconnectBaseMs !== undefined) backoffOpts.baseMs = opts.reconnectBaseMs;
    if (opts.reconnectFactor !== undefined) backoffOpts.factor = opts.reconnectFactor;
    if (opts.reconnectCapMs !== undefined) backoffOpts.capMs = opts.reconnectCapMs;
    this.backoff = new Backoff(backoffOpts, new SeededRandom(this.seed));
  }

  // -- the application's side ---------------------------------------------------------

  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof ClientEvents>(kind: K, fn: ClientEvents[K]): () => void {
    this.listeners[kind].add(fn);
    return () => {
      this.listeners[kind].delete(fn);
    };
  }

  /** The current connection state. */
  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The folded state of a run (spec §8.3), or undefined before anything is known of it. */
  getSnapshot(runId: string): RunSnapshot | undefined {
    return this.runs.get(runId)?.snapshot;
  }

  /** The run ids the client wants. */
  get runIds(): string[] {
    return [...this.runs.keys()];
  }

  /**
   * Wants a run. `from` is a cursor the application kept, or a snapshot of the run it
   * kept (whose `epoch` and `as_of_seq` are the cursor, and which becomes the base of the
   * folded state). Without it the client resumes from its cursor store (if any), else
   * replays the run from the start. Subscribes at once when connected.
   */
  subscribe(runId: string, from?: Cursor | RunSnapshot): void {
    if (this.runs.has(runId)) return;
    this.refused.delete(runId);
    const isSnapshot = from !== undefined && "as_of_seq" in from && from.run_id === runId;
    const cursor = isSnapshot ? undefined : (from as Cursor | undefined);
    const stored = isSnapshot ? (from as RunSnapshot) : from === undefined ? this.opts.cursorStore?.load(runId) : undefined;
    const c: Cursor = stored !== undefined ? { epoch: stored.epoch, seq: stored.as_of_seq } : (cursor ?? {});
    const tracker = new RunTracker(runId, c, this.trackerOptions());
    const entry: RunEntry = {
      tracker,
      snapshot: stored !== undefined ? freezeSnapshot(stored) : undefined,
      terminal: stored !== undefined && TERMINAL_STATUSES.has(stored.status ?? ""),
      savedAt: 0,
      saveTimer: undefined,
    };
    this.runs.set(runId, entry);
    if (entry.snapshot !== undefined) this.emit("snapshot", runId, entry.snapshot);
    const s = this.session;
    if (s?.welcome !== undefined && !s.ended) this.request(s, runId);
  }

  /** No longer wants a run; keeps its stored state unless `forget`. */
  unsubscribe(runId: string, forget = false): void {
    const entry = this.runs.get(runId);
    if (entry === undefined) return;
    this.flushSave(runId, entry);
    this.runs.delete(runId);
    if (forget) this.opts.cursorStore?.remove(runId);
    const s = this.session;
    if (s?.welcome !== undefined && !s.ended && s.requested.delete(runId)) {
      this.send(s, { type: "unsubscribe", run_ids: [runId] });
      this.promote(s);
    }
  }

  /** Starts connecting (again, after `failed` or `closed`). Resolves when the client stops. */
  start(): Promise<void> {
    if (this.loop !== undefined) return this.loop;
    this.stopping = false;
    this.failures = 0;
    this.attachPage();
    this.loop = this.runLoop().finally(() => {
      this.loop = undefined;
      this.detachPage?.();
      this.detachPage = undefined;
    });
    return this.loop;
  }

  /**
   * Starts over after `failed` or `closed` (the user asked to retry), with a fresh count
   * of failed attempts. Does nothing while the client runs: the backoff of spec §12 is
   * not the application's to skip.
   */
  retry(): void {
    if (this.loop === undefined) void this.start();
  }

  /** Closes the connection with 1000 and stops for good (`RW-CONN-11`). */
  close(): Promise<void> {
    this.stopping = true;
    for (const [runId, entry] of this.runs) this.flushSave(runId, entry);
    const s = this.session;
    if (s !== undefined && !s.ended) this.endSession(s, { cls: "closed" }, 1000);
    this.wake();
    return this.loop ?? Promise.resolve();
  }

  // -- the connection loop (spec §12) -----------------------------------------------

  private async runLoop(): Promise<void> {
    for (;;) {
      const attempt = this.failures;
      await this.setState({ status: "connecting", attempt });
      if (this.stopping) return this.setClosed();
      const { ending, healthy } = await this.connectOnce();
      for (const entry of this.runs.values()) entry.tracker.onDisconnect();
      if (healthy) this.failures = 0;
      if (ending.cls === "closed" || this.stopping) {
        // RW-CONN-11: the close frame we sent must reach the server before the
        // application is told we are done (and, say, ends the process or the page).
        await this.closingFinished();
        return this.setClosed();
      }
      if (ending.cls === "terminal") {
        // RW-CONN-11: when we closed (4000, RW-VERSION-7), that close frame must reach
        // the server before the application learns the client failed and ends.
        await this.closingFinished();
        return this.fail(
          ending.error ?? {
            code: "closed",
            message: `the server closed the connection with terminal code ${ending.closeCode}`,
            terminal: true,
          },
          ending.closeCode,
        );
      }
      if (!healthy) this.failures += 1;
      if (this.failures >= this.maxAttempts) {
        return this.fail(
          {
            code: "reconnect_failed",
            message: `gave up after ${this.maxAttempts} consecutive failed attempts (last close code ${this.lastCloseCode ?? "none"}, last error code ${this.lastErrorCode ?? "none"})`,
            terminal: true,
            ...(this.lastErrorCode !== undefined ? { lastErrorCode: this.lastErrorCode } : {}),
          },
          this.lastCloseCode,
        );
      }
      const delayMs = this.backoff.delay(this.failures, ending.cls, ending.retryAfterMs);
      const state: ConnectionState = {
        status: "reconnecting",
        attempt: this.failures,
        delayMs,
        retryAt: Date.now() + delayMs,
        ...(ending.closeCode !== undefined ? { closeCode: ending.closeCode } : {}),
      };
      await this.setState(state);
      await this.wait(delayMs);
      if (this.stopping) return this.setClosed();
    }
  }

  /**
   * Waits until the last socket has closed (the closing handshake of RFC 6455 §7.1.1:
   * the server echoed our close frame, or the socket gave up), for at most
   * `CLOSE_HANDSHAKE_MS`.
   */
  private async closingFinished(): Promise<void> {
    const s = this.session;
    if (s === undefined) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([s.closed, new Promise((r) => (timer = setTimeout(r, CLOSE_HANDSHAKE_MS)))]);
    clearTimeout(timer);
  }

  private get maxAttempts(): number {
    return this.opts.maxAttempts ?? 10;
  }

  private trackerOptions(): { gapTimeoutMs?: number; gapBufferEvents?: number } {
    const o: { gapTimeoutMs?: number; gapBufferEvents?: number } = {};
    if (this.opts.gapTimeoutMs !== undefined) o.gapTimeoutMs = this.opts.gapTimeoutMs;
    if (this.opts.gapBufferEvents !== undefined) o.gapBufferEvents = this.opts.gapBufferEvents;
    return o;
  }

  private async setState(state: ConnectionState): Promise<void> {
    this.stateValue = state;
    this.emit("state", state);
    if (this.opts.stateBarrier !== undefined && (state.status === "connecting" || state.status === "reconnecting")) {
      await this.opts.stateBarrier(state);
    }
  }

  private setClosed(): void {
    this.stateValue = { status: "closed" };
    this.emit("state", this.stateValue);
  }

  private fail(error: RunwireError, closeCode: number | undefined): void {
    const full: RunwireError = { ...error, terminal: true, ...(closeCode !== undefined ? { closeCode } : {}) };
    this.stateValue = { status: "failed", error: full, ...(closeCode !== undefined ? { closeCode } : {}) };
    this.emit("state", this.stateValue);
    this.emit("error", full);
  }

  /** Waits `ms`, or less when woken (`retry`, `close`); a throttled timer is caught up by page events. */
  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.waitDue = this.clock() + ms;
      this.waitResolve = resolve;
      this.waitTimer = setTimeout(() => this.wake(), ms);
    });
  }

  private wake(): void {
    if (this.waitTimer !== undefined) clearTimeout(this.waitTimer);
    this.waitTimer = undefined;
    const r = this.waitResolve;
    this.waitResolve = undefined;
    r?.();
  }

  private async token(): Promise<string | undefined> {
    const t = this.opts.token;
    this.attemptsMade += 1;
    return typeof t === "function" ? await t() : t;
  }

  /** One connection attempt, until it ends. */
  private async connectOnce(): Promise<{ ending: Ending; healthy: boolean }> {
    const previous = this.session;
    if (previous !== undefined) {
      // RW-RECONNECT-9: one connection at a time; the last one finishes closing first.
      await this.closingFinished();
    }
    let token: string | undefined;
    try {
      token = await this.token();
    } catch (e) {
      this.report({ code: "token_failed", message: `the token provider failed: ${String(e)}`, terminal: false });
      return { ending: { cls: "backoff" }, healthy: false };
    }
    if (this.stopping) return { ending: { cls: "closed" }, healthy: false }; // closed while asking for the token
    const Ctor = this.opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (Ctor === undefined) throw new Error("no WebSocket implementation: pass one as options.WebSocket");
    let ws: WebSocketLike;
    try {
      ws = new Ctor(this.opts.url);
    } catch (e) {
      this.report({ code: "connect_failed", message: String(e), terminal: false });
      return { ending: { cls: "backoff" }, healthy: false };
    }
    return new Promise((resolve) => {
      let markClosed!: () => void;
      const closed = new Promise<void>((r) => (markClosed = r));
      const s: Session = {
        ws,
        opened: false,
        welcome: undefined,
        welcomedAt: undefined,
        lastFrameAt: this.clock(),
        budgetMs: this.opts.welcomeTimeoutMs ?? 10_000,
        pendingError: undefined,
        ended: false,
        closedByUs: false,
        watchdog: undefined,
        watchdogAt: Infinity,
        silenceGraceUntil: 0,
        stallGraceFor: undefined,
        closed,
        markClosed,
        rate: 0,
        tokens: 0,
        tokensAt: 0,
        queue: [],
        drainTimer: undefined,
        requested: new Set(),
        deferred: [],
      };
      this.session = s;
      this.onEnd = (ending: Ending) => {
        const healthy = s.welcomedAt !== undefined && this.clock() - s.welcomedAt >= (this.opts.stableSessionMs ?? 5000);
        resolve({ ending, healthy });
      };
      ws.binaryType = "arraybuffer";
      ws.onopen = () => this.onOpen(s, token);
      ws.onmessage = (ev) => this.onFrame(s, ev.data);
      ws.onerror = (ev) => {
        s.lastError = ev;
      };
      ws.onclose = (ev) => this.onClose(s, ev.code);
      this.armWatchdog(s);
    });
  }

  private onEnd: (ending: Ending) => void = () => {};

  private onOpen(s: Session, token: string | undefined): void {
    if (s.ended) return;
    s.opened = true;
    s.lastFrameAt = this.clock();
    const hello: ClientMessage = {
      type: "hello",
      versions: [...(this.opts.versions ?? PROTOCOL_VERSIONS)],
      client: this.opts.clientInfo ?? { name: "@runwire/client", version: "0.1.0" },
    };
    if (token !== undefined && token !== "") hello.token = token;
    // RW-LIMIT-5 with the limits of the last welcome (Appendix B before the first one):
    // at most max_subscriptions runs, and what does not fit in the frame follows welcome.
    const subs: SubscriptionRequest[] = [];
    for (const entry of this.runs.values()) {
      if (s.requested.size >= this.limits.max_subscriptions) {
        this.overLimit(entry.tracker.runId);
        continue;
      }
      s.requested.add(entry.tracker.runId);
      const req = entry.tracker.request();
      if (s.deferred.length === 0 && byteLength(JSON.stringify({ ...hello, subscriptions: [...subs, req] })) <= this.limits.max_frame_bytes) {
        subs.push(req);
      } else {
        s.deferred.push(req);
      }
    }
    if (subs.length > 0) hello.subscriptions = subs;
    // RW-CONN-4: hello first, at once.
    s.ws.send(JSON.stringify(hello));
    this.armWatchdog(s);
  }

  private onClose(s: Session, code: number): void {
    s.markClosed();
    if (s.ended) return;
    if ((s.lastError as { error?: { code?: string } } | undefined)?.error?.code === "WS_ERR_INVALID_UTF8") {
      // RW-CLOSE-10: `ws` failed the connection itself (close 1007) on a text frame that
      // is not UTF-8; whatever close code the server echoed, it is an undecodable frame.
      this.report({ code: "invalid_frame", message: "the server sent a text frame that is not valid UTF-8", terminal: false });
      this.finish(s, { cls: "backoff" });
      return;
    }
    // 1005 and 1006 are local: no close frame was received (RW-RECONNECT-7).
    let closeCode: number | undefined = code === 1005 || code === 1006 || code === 0 ? undefined : code;
    const pe = s.pendingError;
    if (closeCode === undefined && pe?.close_code !== undefined) closeCode = pe.close_code; // RW-CLOSE-3
    if (closeCode === undefined) {
      if (!s.opened) {
        this.report({ code: "connect_failed", message: "the connection could not be opened", terminal: false });
      } else {
        // RW-CLOSE-10: a browser fails the connection by itself on a text frame that is
        // not UTF-8; the page sees 1006 and cannot tell it from a lost connection.
        this.report({ code: "connection_lost", message: "the connection ended without a close frame", terminal: false });
      }
    }
    if (closeCode !== undefined) this.lastCloseCode = closeCode;
    const cls = closeClass(closeCode);
    let error: RunwireError | undefined;
    if (pe !== undefined) error = this.toError(pe, cls === "terminal");
    const ending: Ending = {
      cls,
      ...(closeCode !== undefined ? { closeCode } : {}),
      ...(pe?.retry_after_ms !== undefined ? { retryAfterMs: pe.retry_after_ms } : {}),
      ...(error !== undefined ? { error } : {}),
    };
    this.finish(s, ending);
  }

  /** Ends the session once: stops its timers and hands the ending to the loop. */
  private finish(s: Session, ending: Ending): void {
    if (s.ended) return;
    s.ended = true;
    if (s.watchdog !== undefined) clearTimeout(s.watchdog);
    if (s.drainTimer !== undefined) clearTimeout(s.drainTimer);
    this.onEnd(ending);
  }

  /** Closes the socket ourselves with `code` and ends the session. */
  private endSession(s: Session, ending: Ending, code: number): void {
    if (!s.ended) {
      s.closedByUs = true;
      try {
        s.ws.close(code);
      } catch {
        s.markClosed();
      }
    }
    this.finish(s, ending);
  }

  // -- timers: liveness, welcome deadline, gaps ---------------------------------------

  /** (Re)arms the one timer of a session at its nearest deadline. */
  private armWatchdog(s: Session): void {
    if (s.ended) return;
    let at = Math.max(s.lastFrameAt + s.budgetMs, s.silenceGraceUntil);
    for (const entry of this.runs.values()) {
      const g = entry.tracker.gapDeadline;
      if (g !== undefined && !entry.tracker.resyncing && g < at) at = g;
    }
    if (s.watchdog !== undefined && s.watchdogAt <= at) return;
    if (s.watchdog !== undefined) clearTimeout(s.watchdog);
    s.watchdogAt = at;
    s.watchdog = setTimeout(() => {
      const due = s.watchdogAt;
      s.watchdog = undefined;
      s.watchdogAt = Infinity;
      this.checkDeadlines(s, this.clock() - due);
    }, Math.max(0, at - this.clock()));
  }

  /**
   * Compares the clock with the deadlines (`RW-HEART-6`): never counts timer firings.
   * `lateMs` is how late the timer that called us fired. A timer that fired
   * `STALL_MS` or more late says our own event loop was stalled (a busy machine, a
   * long task on the page): frames that arrived meanwhile may still wait in its
   * queue behind this timer, so silence is declared only after they have had their
   * turn. Once per silence, we look again after as long as the stall (at most one
   * budget); a server that really went silent is then declared dead that much later.
   */
  private checkDeadlines(s: Session, lateMs = 0): void {
    if (s.ended) return;
    const t = this.clock();
    if (t - s.lastFrameAt >= s.budgetMs && t >= s.silenceGraceUntil) {
      if (lateMs >= STALL_MS && s.stallGraceFor !== s.lastFrameAt) {
        s.stallGraceFor = s.lastFrameAt;
        s.silenceGraceUntil = t + Math.min(lateMs, s.budgetMs);
        this.armWatchdog(s);
        return;
      }
      // RW-RECONNECT-11 before welcome, RW-HEART-5 after: close 1000, reconnect with backoff.
      const code = s.welcome !== undefined ? "liveness_timeout" : "welcome_timeout";
      this.report({ code, message: `no frame within ${Math.round(s.budgetMs)} ms`, terminal: false });
      this.endSession(s, { cls: "backoff" }, 1000);
      return;
    }
    const due: RunTracker[] = [];
    for (const entry of this.runs.values()) if (entry.tracker.gapExpired(t)) due.push(entry.tracker);
    if (due.length > 0) this.resync(s, due);
    this.armWatchdog(s);
  }

  /** RW-ORDER-5: unsubscribe, then subscribe from the cursor. */
  private resync(s: Session, trackers: RunTracker[]): void {
    for (const t of trackers) t.beginResync();
    this.send(s, { type: "unsubscribe", run_ids: trackers.map((t) => t.runId) });
    this.send(s, { type: "subscribe", subscriptions: trackers.map((t) => t.request()) });
  }

  // -- frames ---------------------------------------------------------------------------

  private onFrame(s: Session, data: unknown): void {
    if (s.ended) return;
    s.lastFrameAt = this.clock(); // RW-HEART-6: every frame proves the connection alive
    if (typeof data !== "string") return this.invalid(s, "the server sent a binary frame");
    let msg;
    try {
      msg = decodeFrame(data);
    } catch (e) {
      if (e instanceof DecodeError) return this.invalid(s, e.message);
      throw e;
    }
    this.dispatch(s, msg as KnownServerMessage);
    if (!s.ended) this.maybeDone(s);
  }

  private dispatch(s: Session, msg: KnownServerMessage): void {
    switch (msg.type) {
      case "welcome":
        return this.onWelcome(s, msg);
      case "ping":
        return this.send(s, { type: "pong", id: msg.id }); // RW-HEART-4, from the frame's handler
      case "event":
        if (s.welcome !== undefined) this.onEvents(s, [msg.event]);
        return;
      case "batch":
        if (s.welcome !== undefined) this.onEvents(s, msg.events); // RW-BATCH-4
        return;
      case "subscribed":
        return this.onSubscribed(msg);
      case "reset":
        return this.onReset(msg);
      case "error":
        return this.onError(s, msg);
      default:
        return; // unsubscribed (after our own resync), pong, unknown types (RW-VERSION-5)
    }
  }

  private invalid(s: Session, why: string): void {
    // RW-INPUT-12: report, deliver nothing from the frame, close 4000, back off.
    this.report({ code: "invalid_frame", message: why, terminal: false });
    this.endSession(s, { cls: "backoff" }, 4000);
  }

  private onWelcome(s: Session, msg: WelcomeMessage): void {
    if (s.welcome !== undefined) return;
    const offered = this.opts.versions ?? PROTOCOL_VERSIONS;
    if (!offered.includes(msg.version)) {
      // RW-VERSION-7: close 4000, terminal, no further frame processed.
      this.endSession(
        s,
        {
          cls: "terminal",
          error: {
            code: "protocol_violation",
            message: `welcome chose version ${msg.version}, which the client did not offer`,
            terminal: true,
          },
        },
        4000,
      );
      return;
    }
    s.welcome = msg;
    s.welcomedAt = this.clock();
    // RW-LIMIT-5: keep to the announced rate; the bucket was full and hello took a token.
    s.rate = Math.max(1, msg.limits?.max_messages_per_second ?? 50);
    s.tokens = s.rate - 1;
    s.tokensAt = this.clock();
    s.budgetMs = msg.heartbeat_interval_ms + (this.opts.livenessGraceMs ?? 10_000); // RW-CONN-8
    if (msg.limits !== undefined) this.limits = msg.limits;
    if (s.deferred.length > 0) this.sendSubscribe(s, s.deferred.splice(0));
    this.stateValue = { status: "connected" };
    this.emit("state", this.stateValue);
    this.armWatchdog(s);
  }

  private onSubscribed(msg: SubscribedMessage): void {
    const entry = this.runs.get(msg.run_id);
    if (entry === undefined) return;
    entry.tracker.onSubscribed(msg.epoch, msg.after_seq, this.clock());
    this.emit("subscribed", msg);
    if (entry.snapshot === undefined || entry.snapshot.epoch !== msg.epoch) {
      // Another epoch is another log: the state is folded anew.
      entry.snapshot = emptySnapshot(msg.run_id, msg.epoch);
      entry.terminal = false;
      this.emit("snapshot", msg.run_id, entry.snapshot);
    }
  }

  private onReset(msg: ResetMessage): void {
    const entry = this.runs.get(msg.run_id);
    if (entry === undefined) return;
    entry.tracker.onReset(msg.epoch, msg.snapshot.as_of_seq); // RW-RESUME-9
    entry.snapshot = freezeSnapshot(msg.snapshot);
    entry.terminal = TERMINAL_STATUSES.has(msg.snapshot.status ?? "");
    this.emit("reset", msg);
    this.emit("snapshot", msg.run_id, entry.snapshot);
    this.scheduleSave(msg.run_id, entry);
  }

  private onEvents(s: Session, events: readonly RunEvent[]): void {
    const t = this.clock();
    let resync: RunTracker[] | undefined;
    let gap = false;
    for (const e of events) {
      const entry = this.runs.get(e.run_id);
      if (entry === undefined) continue; // RW-SUB-6
      const r = entry.tracker.push(e, t);
      if (r.resubscribe) (resync ??= []).push(entry.tracker);
      if (entry.tracker.gapDeadline !== undefined) gap = true;
      for (const d of r.deliver) this.deliver(entry, d);
    }
    if (resync !== undefined) this.resync(s, resync);
    if (gap) this.armWatchdog(s);
  }

  private deliver(entry: RunEntry, e: RunEvent): void {
    const base = entry.snapshot ?? emptySnapshot(e.run_id, entry.tracker.epoch ?? "");
    entry.snapshot = fold(base, e);
    if (e.type === "run.status" && TERMINAL_STATUSES.has(e.data.status as string)) entry.terminal = true;
    this.emit("event", e);
    this.emit("snapshot", e.run_id, entry.snapshot);
    this.scheduleSave(e.run_id, entry);
  }

  private onError(s: Session, e: ErrorMessage): void {
    this.lastErrorCode = e.code;
    if (e.close_code !== undefined) {
      if (closeClass(e.close_code) === "terminal") {
        // RW-ERROR-8: reported once, as the terminal error the client stops with.
        this.lastCloseCode = e.close_code;
        this.endSession(s, { cls: "terminal", closeCode: e.close_code, error: this.toError(e, true) }, 1000);
        return;
      }
      s.pendingError = e;
    } else if (e.retry_after_ms !== undefined) {
      s.pendingError = e;
    }
    this.report(this.toError(e, false));
    // RW-SUB-10: a refused subscription is not retried; others are unaffected (RW-ERROR-5);
    // an error naming an open subscription answers some other entry and ends nothing (RW-SUB-5).
    const runId = e.run_id;
    const entry = runId !== undefined ? this.runs.get(runId) : undefined;
    if (
      runId !== undefined &&
      entry !== undefined &&
      !entry.tracker.open &&
      e.close_code === undefined &&
      !e.retryable &&
      e.code !== "already_subscribed" &&
      e.code !== "not_subscribed"
    ) {
      this.runs.delete(runId);
      this.refused.add(runId);
      if (s.requested.delete(runId)) this.promote(s);
    }
  }

  private toError(e: ErrorMessage, terminal: boolean): RunwireError {
    return {
      code: e.code,
      message: e.message,
      terminal,
      ...(e.run_id !== undefined ? { runId: e.run_id } : {}),
      ...(e.close_code !== undefined ? { closeCode: e.close_code } : {}),
      ...(e.supported_versions !== undefined ? { supportedVersions: e.supported_versions } : {}),
    };
  }

  private report(error: RunwireError): void {
    this.emit("error", error);
  }

  /** RW-CONN-11: with `closeWhenDone`, close with 1000 once every run is done. */
  private maybeDone(s: Session): void {
    if (this.opts.closeWhenDone !== true || this.stopping) return;
    for (const entry of this.runs.values()) if (!entry.terminal) return;
    if (this.runs.size === 0 && this.refused.size === 0) return;
    this.stopping = true;
    for (const [runId, entry] of this.runs) this.flushSave(runId, entry);
    this.endSession(s, { cls: "closed" }, 1000);
  }

  // -- sending, within the announced limits (RW-LIMIT-5) -------------------------------

  /** Subscribes a run on the connection if `max_subscriptions` allows, else reports it. */
  private request(s: Session, runId: string): void {
    const entry = this.runs.get(runId);
    if (entry === undefined || s.requested.has(runId)) return;
    if (s.requested.size >= this.limits.max_subscriptions) {
      this.overLimit(runId);
      return;
    }
    s.requested.add(runId);
    this.sendSubscribe(s, [entry.tracker.request()]);
  }

  /** A slot is free: subscribes the first wanted run that is not subscribed. */
  private promote(s: Session): void {
    for (const runId of this.runs.keys()) {
      if (!s.requested.has(runId)) {
        this.request(s, runId);
        return;
      }
    }
  }

  private overLimit(runId: string): void {
    this.report({
      code: "too_many_subscriptions",
      message: `not subscribed: the connection holds the ${this.limits.max_subscriptions} subscriptions the server allows; it is subscribed when one ends`,
      terminal: false,
      runId,
    });
  }

  /** `subscribe` messages holding `reqs`, each within `max_frame_bytes`. */
  private sendSubscribe(s: Session, reqs: SubscriptionRequest[]): void {
    let chunk: SubscriptionRequest[] = [];
    for (const req of reqs) {
      const next = [...chunk, req];
      if (chunk.length > 0 && byteLength(JSON.stringify({ type: "subscribe", subscriptions: next })) > this.limits.max_frame_bytes) {
        this.send(s, { type: "subscribe", subscriptions: chunk });
        chunk = [req];
      } else {
        chunk = next;
      }
    }
    if (chunk.length > 0) this.send(s, { type: "subscribe", subscriptions: chunk });
  }

  private send(s: Session, msg: ClientMessage): void {
    if (s.ended) return;
    s.queue.push(JSON.stringify(msg));
    this.drain(s);
  }

  private drain(s: Session): void {
    if (s.drainTimer !== undefined || s.ended) return;
    while (s.queue.length > 0) {
      const t = this.clock();
      s.tokens = Math.min(s.rate, s.tokens + ((t - s.tokensAt) / 1000) * s.rate);
      s.tokensAt = t;
      if (s.tokens < 1) {
        const waitMs = Math.ceil(((1 - s.tokens) / s.rate) * 1000);
        s.drainTimer = setTimeout(() => {
          s.drainTimer = undefined;
          this.drain(s);
        }, waitMs);
        return;
      }
      s.tokens -= 1;
      s.ws.send(s.queue.shift()!);
    }
  }

  // -- persistence --------------------------------------------------------------------

  private scheduleSave(runId: string, entry: RunEntry): void {
    const store = this.opts.cursorStore;
    if (store === undefined || entry.saveTimer !== undefined) return;
    const interval = this.opts.persistIntervalMs ?? 250;
    const t = this.clock();
    if (t - entry.savedAt >= interval) {
      this.saveNow(runId, entry);
      return;
    }
    entry.saveTimer = setTimeout(() => {
      entry.saveTimer = undefined;
      if (this.runs.get(runId) === entry) this.saveNow(runId, entry);
    }, interval - (t - entry.savedAt));
  }

  private saveNow(runId: string, entry: RunEntry): void {
    entry.savedAt = this.clock();
    if (entry.snapshot !== undefined) this.opts.cursorStore?.save(runId, entry.snapshot);
  }

  private flushSave(runId: string, entry: RunEntry): void {
    if (entry.saveTimer !== undefined) clearTimeout(entry.saveTimer);
    entry.saveTimer = undefined;
    if (this.opts.cursorStore !== undefined) this.saveNow(runId, entry);
  }

  // -- page events ----------------------------------------------------------------------

  private attachPage(): void {
    const w = (globalThis as { window?: EventTarget & { document?: { visibilityState?: string } } }).window;
    const want = this.opts.pageEvents ?? w !== undefined;
    if (!want || w === undefined) return;
    const catchUp = (): void => {
      if (w.document?.visibilityState === "hidden") {
        for (const [runId, entry] of this.runs) this.flushSave(runId, entry);
        return;
      }
      // A throttled timer may have missed its time: act on the clock, never earlier.
      if (this.waitTimer !== undefined && this.clock() >= this.waitDue) this.wake();
      const s = this.session;
      if (s !== undefined && !s.ended) this.checkDeadlines(s);
    };
    const save = (): void => {
      for (const [runId, entry] of this.runs) this.flushSave(runId, entry);
    };
    const doc = w.document as unknown as EventTarget | undefined;
    w.addEventListener("online", catchUp);
    doc?.addEventListener("visibilitychange", catchUp);
    w.addEventListener("pagehide", save);
    this.detachPage = () => {
      w.removeEventListener("online", catchUp);
      doc?.removeEventListener("visibilitychange", catchUp);
      w.removeEventListener("pagehide", save);
    };
  }

  private emit<K extends keyof ClientEvents>(kind: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const fn of this.listeners[kind]) {
      try {
        (fn as (...a: Parameters<ClientEvents[K]>) => void)(...args);
      } catch (e) {
        // A listener's failure must not break the client's state machine.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
