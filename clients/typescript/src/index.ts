/**
 * `@runwire/client`: the Runwire client for browsers and Node (spec/protocol.md).
 *
 * @packageDocumentation
 */

export {
  RunwireClient,
  type ClientEvents,
  type ClientOptions,
  type ConnectionState,
  type Cursor,
  type RunwireError,
  type TokenSource,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { Backoff, closeClass, randomSeed, SeededRandom, type BackoffOptions, type CloseClass, type Random } from "./backoff.js";
export { MemoryCursorStore, WebStorageCursorStore, type CursorStore, type StorageLike } from "./cursor-store.js";
export { checkEvent, decodeFrame, DecodeError, KNOWN_SERVER_TYPES } from "./decode.js";
export { emptySnapshot, fold, freezeSnapshot, SNAPSHOT_RECENT_LOGS } from "./fold.js";
export { RunTracker, type PushResult, type TrackerOptions } from "./tracker.js";
export * from "./wire.js";
export {
  SharedRunwireClient,
  type BroadcastChannelLike,
  type LockManagerLike,
  type RunwireClientLike,
  type SharedClientOptions,
} from "./shared.js";
