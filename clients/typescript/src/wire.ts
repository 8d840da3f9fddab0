/**
 * The wire types of the Runwire protocol, version 1 (spec/protocol.md §5–§14).
 *
 * Every message and event type the client reads or writes is declared in this one file,
 * so that the client's type check follows the protocol: when the generated types of
 * `schema/v1/typescript/` change, this file is the only place to adapt.
 */

/** The protocol versions this client implements (spec §6, `RW-VERSION-1`). */
export const PROTOCOL_VERSIONS: readonly string[] = ["1.0"];

/** The statuses that end a run (spec §3.1, `RW-TYPE-2`). */
export const TERMINAL_STATUSES: ReadonlySet<string> = new Set(["completed", "failed", "cancelled"]);

/** A JSON value as `JSON.parse` returns it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A JSON object. */
export type JsonObject = { [key: string]: Json };

/** The event envelope (spec §2.2). `data` is the type's payload; unknown types are kept as they are. */
export interface RunEvent {
  readonly event_id: string;
  readonly run_id: string;
  readonly seq: number;
  readonly type: string;
  readonly time: string;
  readonly data: JsonObject;
  readonly [member: string]: Json | undefined;
}

/** One subscription entry of `hello` or `subscribe` (spec §8.1). */
export interface SubscriptionRequest {
  run_id: string;
  epoch?: string;
  after_seq?: number;
}

/** `hello` (spec §5.2). */
export interface HelloMessage {
  type: "hello";
  versions: string[];
  token?: string;
  client?: { name: string; version: string };
  subscriptions?: SubscriptionRequest[];
}

/** `subscribe` (spec §8.1). */
export interface SubscribeMessage {
  type: "subscribe";
  subscriptions: SubscriptionRequest[];
}

/** `unsubscribe` (spec §8.1). */
export interface UnsubscribeMessage {
  type: "unsubscribe";
  run_ids: string[];
}

/** `pong` (spec §11). */
export interface PongMessage {
  type: "pong";
  id: string;
}

/** Every message this client sends. */
export type ClientMessage = HelloMessage | SubscribeMessage | UnsubscribeMessage | PongMessage;

/** The limits `welcome` announces (spec §14.1). */
export interface Limits {
  readonly max_frame_bytes: number;
  readonly max_event_bytes: number;
  readonly max_subscriptions: number;
  readonly max_messages_per_second: number;
  readonly slow_consumer_max_bytes?: number;
  readonly slow_consumer_max_age_ms?: number;
}

/** `welcome` (spec §5.3). */
export interface WelcomeMessage {
  readonly type: "welcome";
  readonly version: string;
  readonly session_id: string;
  readonly heartbeat_interval_ms: number;
  readonly pong_timeout_ms: number;
  readonly batch_window_ms: number;
  readonly replay_window_events: number;
  readonly limits: Limits;
  readonly server?: { readonly name: string; readonly version: string };
}

/** `subscribed` (spec §8.1). */
export interface SubscribedMessage {
  readonly type: "subscribed";
  readonly run_id: string;
  readonly epoch: string;
  readonly after_seq: number;
  readonly head_seq: number;
}

/** `unsubscribed` (spec §8.1). */
export interface UnsubscribedMessage {
  readonly type: "unsubscribed";
  readonly run_id: string;
}

/** The reasons of `reset` (spec §8.3); an open enumeration. */
export type ResetReason = "epoch_mismatch" | "cursor_ahead" | "cursor_too_old" | (string & {});

/** `reset` (spec §8.3). */
export interface ResetMessage {
  readonly type: "reset";
  readonly run_id: string;
  readonly epoch: string;
  readonly reason: ResetReason;
  readonly snapshot: RunSnapshot;
}

/** `event` (spec §10). */
export interface EventMessage {
  readonly type: "event";
  readonly event: RunEvent;
}

/** `batch` (spec §10). */
export interface BatchMessage {
  readonly type: "batch";
  readonly events: readonly RunEvent[];
}

/** `ping` (spec §11). */
export interface PingMessage {
  readonly type: "ping";
  readonly id: string;
}

/** A server `pong` (spec §11): ignored, as this client sends no ping (`RW-HEART-9`). */
export interface ServerPongMessage {
  readonly type: "pong";
  readonly id: string;
}

/** The `error` frame (spec §13.1). `code` is an open enumeration (`RW-COMPAT-4`). */
export interface ErrorMessage {
  readonly type: "error";
  readonly code: string;
  readonly message: string;
  readonly retryable: boolean;
  readonly run_id?: string;
  readonly close_code?: number;
  readonly retry_after_ms?: number;
  readonly supported_versions?: readonly string[];
}

/** A server message of a type this client does not know: ignored (`RW-VERSION-5`). */
export interface UnknownServerMessage {
  readonly type: string;
  readonly [member: string]: Json | undefined;
}

/** Every server message this client knows. */
export type KnownServerMessage =
  | WelcomeMessage
  | SubscribedMessage
  | UnsubscribedMessage
  | ResetMessage
  | EventMessage
  | BatchMessage
  | PingMessage
  | ServerPongMessage
  | ErrorMessage;

/** One todo of `todo.updated` (spec §3.10). */
export interface Todo {
  readonly [member: string]: Json | undefined;
}

/** The folded state of a run (spec §8.3, `RunSnapshot`). Readers ignore unknown members. */
export interface RunSnapshot {
  readonly run_id: string;
  readonly epoch: string;
  readonly as_of_seq: number;
  readonly status?: string;
  readonly status_reason?: string;
  readonly progress?: Readonly<JsonObject>;
  readonly metadata?: Readonly<JsonObject>;
  readonly phase?: string;
  readonly todos?: readonly Json[];
  readonly artifacts?: readonly JsonObject[];
  readonly open_tool_calls?: Readonly<Record<string, JsonObject>>;
  readonly recent_logs?: readonly JsonObject[];
  readonly created_at?: string;
  readonly updated_at?: string;
  readonly [member: string]: unknown;
}
