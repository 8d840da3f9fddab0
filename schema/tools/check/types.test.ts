// Compile-time tests of the generated declarations in schema/v1/typescript/ (run by
// `npm test` here, and by .ci/run). Every `@ts-expect-error` below is a test: if the
// declarations became loose enough to accept the line, tsc reports the directive as
// unused and fails. The values are the examples of spec/protocol.md.

import {
  CLIENT_MESSAGE_TYPES,
  EVENT_TYPES,
  SERVER_MESSAGE_TYPES,
  isKnownEvent,
  isKnownServerMessage,
  type AppendRequest,
  type AppendResponse,
  type ClientMessage,
  type ClientMessageType,
  type ErrorCode,
  type Event,
  type EventDataMap,
  type EventOfType,
  type EventType,
  type Health,
  type HistoryResponse,
  type HttpError,
  type KnownClientMessage,
  type KnownEvent,
  type KnownServerMessage,
  type KnownNewEvent,
  type NewEvent,
  type RunSnapshot,
  type RunStatus,
  type ServerMessage,
  type ServerMessageType,
  type UnknownEvent,
} from "../../v1/typescript/index.js";

/** Fails to compile unless `A` and `B` are the same type. */
type Equal<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | undefined {
  return undefined;
}

// --- client messages (spec §5.2, §8.1) ---

const hello: KnownClientMessage = {
  type: "hello",
  versions: ["1.0"],
  token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl",
  client: { name: "runwire-client", version: "0.1.0" },
  subscriptions: [{ run_id: "run-42", epoch: "7f3a9c", after_seq: 18 }, { run_id: "run-43" }],
};
const minimalHello: ClientMessage = { type: "hello", versions: ["1.0"] };
// @ts-expect-error `versions` is required in hello.
const helloWithoutVersions: KnownClientMessage = { type: "hello" };
// @ts-expect-error `subscribe` carries `subscriptions`, not `run_id`.
const badSubscribe: KnownClientMessage = { type: "subscribe", run_id: "run-42" };
assertType<Equal<ClientMessageType, (typeof CLIENT_MESSAGE_TYPES)[number]>>();
assertType<Equal<ClientMessageType, "hello" | "subscribe" | "unsubscribe" | "ping" | "pong">>();

// --- server messages (spec §5.3–§13) ---

/** Every known server message is handled: `never` in the default branch. */
function describe(message: ServerMessage): string {
  if (!isKnownServerMessage(message)) {
    // An unknown type is ignored (RW-VERSION-5), and stays representable.
    const t: string = message.type;
    return `ignored ${t}`;
  }
  switch (message.type) {
    case "welcome":
      return `version ${message.version}, ping every ${message.heartbeat_interval_ms} ms`;
    case "subscribed":
      return `${message.run_id} from ${message.after_seq} to ${message.head_seq}`;
    case "reset":
      return `${message.run_id} reset (${message.reason}) as of ${message.snapshot.as_of_seq}`;
    case "unsubscribed":
      return message.run_id;
    case "event":
      return message.event.type;
    case "batch":
      return `${message.events.length} events`;
    case "ping":
    case "pong":
      return message.id;
    case "error": {
      const close: number | null | undefined = message.close_code;
      return `${message.code} ${message.retryable} ${close ?? "-"}`;
    }
    default: {
      const exhaustive: never = message;
      return exhaustive;
    }
  }
}
assertType<Equal<ServerMessageType, (typeof SERVER_MESSAGE_TYPES)[number]>>();
const unknownServerMessage: ServerMessage = { type: "presence", who: ["u-1"] };
// @ts-expect-error an unknown message is not a known one.
const notKnown: KnownServerMessage = { type: "presence" };
// @ts-expect-error `error` needs `code`, `message` and `retryable`.
const badError: KnownServerMessage = { type: "error", message: "x" };

// --- events (spec §2, §3) ---

const status: Event = {
  event_id: "ev_01JDB6QA17H8J9K0L1M2N3P4Q5",
  run_id: "run-42",
  seq: 1,
  type: "run.status",
  time: "2026-11-22T10:00:00.000Z",
  data: { status: "running" },
};
// A custom type (spec §3.12) is an Event, delivered raw (RW-VERSION-4).
const custom: Event = {
  event_id: "ev_01JDB6QA18J9K0L1M2N3P4Q5R6",
  run_id: "run-42",
  seq: 2,
  type: "acme.deploy.started",
  time: "2026-11-22T10:00:01.000Z",
  data: { target: "prod", replicas: 3 },
};
const unknownEvent: UnknownEvent = { ...custom };

function fold(e: Event): string {
  if (!isKnownEvent(e)) {
    return `raw ${e.type} ${JSON.stringify(e.data)}`;
  }
  switch (e.type) {
    case "run.status": {
      const s: RunStatus = e.data.status;
      return s;
    }
    case "run.progress":
      return `${e.data.percent ?? "?"}%`;
    case "log.line":
      return `${e.data.level}: ${e.data.message}`;
    case "tool.started":
      return e.data.call_id;
    case "todo.updated":
      return e.data.items.map((t) => t.status).join(",");
    case "output.chunk":
      return e.data.encoding ?? "utf8";
    default:
      return e.type;
  }
}

// The run status is a closed enum; an error code is extensible (known values complete,
// other strings accepted: RW-ERROR-4).
const knownStatus: RunStatus = "completed";
// @ts-expect-error not a run status.
const laterStatus: RunStatus = "succeeded";
const laterCode: ErrorCode = "a_code_of_a_later_minor_version";
assertType<Equal<EventType, (typeof EVENT_TYPES)[number]>>();
assertType<Equal<EventType, keyof EventDataMap>>();
assertType<Equal<EventOfType<"log.line">["data"], EventDataMap["log.line"]>>();
assertType<Equal<KnownEvent["type"], EventType>>();
// @ts-expect-error `log.line` needs `message`.
const badLog: KnownEvent = { ...status, type: "log.line", data: { level: "info" } };
// @ts-expect-error `seq` is a number.
const badSeq: Event = { ...status, seq: "1" };

// --- snapshot (spec §8.3) ---

const snapshot: RunSnapshot = {
  run_id: "run-42",
  epoch: "7f3a9c",
  as_of_seq: 18,
  status: "running",
  progress: { percent: 40.5, step: "Compiling", current: 3, total: 8, tool: "cargo" },
  metadata: { agent: "builder-bot", project: "acme/web", title: "Fix flaky login test", labels: { branch: "main" } },
  phase: "build",
  todos: [
    { id: "1", text: "Reproduce the flaky test", status: "completed" },
    { id: "2", text: "Inject a fake clock", status: "in_progress" },
  ],
  artifacts: [
    {
      artifact_id: "patch-1",
      kind: "patch",
      uri: "https://artifacts.example.com/run-42/patch-1.diff",
      media_type: "text/x-diff",
      size_bytes: 2311,
    },
  ],
  open_tool_calls: { "call-8": { call_id: "call-8", tool: "shell", input: { command: "cargo build" } } },
  recent_logs: [{ level: "info", message: "compiling web v0.3.1" }],
  created_at: "2026-11-22T10:00:00.000Z",
  updated_at: "2026-11-22T10:01:40.123Z",
};
// @ts-expect-error `as_of_seq` is required.
const badSnapshot: RunSnapshot = { run_id: "run-42", epoch: "7f3a9c" };

// --- HTTP (spec §4) ---

const newEvent: NewEvent = {
  type: "log.line",
  data: { level: "info", message: "compiling web v0.3.1" },
  idempotency_key: "builder-7:step-3:line-1",
};
const append: AppendRequest = {
  events: [
    { type: "run.progress", data: { percent: 40.5, step: "Compiling" }, idempotency_key: "builder-7:17" },
    newEvent,
  ],
};
const appended: AppendResponse = {
  run_id: "run-42",
  epoch: "7f3a9c",
  first_seq: 17,
  last_seq: 18,
  events: [
    { seq: 17, event_id: "ev_01JDB6QA17H8J9K0L1M2N3P4Q5", duplicate: true },
    { seq: 18, event_id: "ev_01JDB6QA18J9K0L1M2N3P4Q5R6" },
  ],
};
const history: HistoryResponse = { run_id: "run-42", epoch: "7f3a9c", events: [status, custom], head_seq: 18, has_more: false };
const httpError: HttpError = {
  error: { code: "invalid_request", message: "percent 140 is outside 0 to 100", pointer: "/events/0/data/percent", retryable: false },
};
const health: Health = { status: "ok" };
const customNew: NewEvent = { type: "acme.deploy.started", data: { target: "prod" } };
const knownNew: KnownNewEvent = { type: "run.status", data: { status: "running" }, time: "2026-11-22T10:00:00.000Z" };
// @ts-expect-error a `log.line` to append needs `message`.
const badNewLog: KnownNewEvent = { type: "log.line", data: { level: "info" } };
// @ts-expect-error `idempotency_key` is a string.
const badKey: KnownNewEvent = { type: "run.phase", data: { phase: "build" }, idempotency_key: 7 };
// @ts-expect-error an append carries `events`.
const badAppend: AppendRequest = { event: newEvent };

export const values = [
  hello, minimalHello, helloWithoutVersions, badSubscribe, unknownServerMessage, notKnown, badError,
  unknownEvent, knownStatus, laterStatus, laterCode, badLog, badSeq, snapshot, badSnapshot, append, appended,
  history, httpError, health, badAppend, customNew, knownNew, badNewLog, badKey, describe, fold,
];
