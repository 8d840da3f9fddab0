/**
 * Decoding of server frames (spec §1.3, §14.2).
 *
 * `JSON.parse` alone is not enough for the protocol: it reads `2.0` as the integer 2
 * (`RW-CONV-6` asks to reject it where an integer is expected) and rounds integers above
 * 2^53 − 1 (`RW-CONV-2`). The decoder therefore scans the frame's number tokens once;
 * only when a number is written with a fraction or an exponent and still has an integer
 * value does it take a slower path that keeps such numbers apart until the schema checks
 * have run, so that the common frame costs one `JSON.parse` and one linear scan.
 */

import type { Json, JsonObject, KnownServerMessage, RunEvent, UnknownServerMessage } from "./wire.js";

/** A frame that cannot be decoded (`RW-INPUT-12`): the client reports it and closes with 4000. */
export class DecodeError extends Error {
  override readonly name = "DecodeError";
}

/** The message types of protocol version 1 that a server sends. */
export const KNOWN_SERVER_TYPES: ReadonlySet<string> = new Set([
  "welcome",
  "subscribed",
  "unsubscribed",
  "reset",
  "event",
  "batch",
  "ping",
  "pong",
  "error",
]);

const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const EVENT_TYPE = /^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$/;
const TIME = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$/;
const MARK = "\u0001rw-fraction-integer:";

function fail(why: string): never {
  throw new DecodeError(why);
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** An integer member: a safe, non-negative integer (`RW-CONV-2`, `RW-CONV-6`). */
function uint(v: unknown, what: string, min = 0): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    fail(`${what} must be an integer from ${min} to 2^53 - 1`);
  }
  return v;
}

/** An optional integer member; `null` counts as absent (`RW-CONV-7`). */
function optUint(v: unknown, what: string): number | undefined {
  return v === undefined || v === null ? undefined : uint(v, what);
}

function str(v: unknown, what: string): string {
  if (typeof v !== "string") fail(`${what} must be a string`);
  return v;
}

function optStr(v: unknown, what: string): string | undefined {
  return v === undefined || v === null ? undefined : str(v, what);
}

/**
 * Whether the text holds, outside strings, a number token written with a fraction or an
 * exponent whose value is an integer (`2.0`, `1e3`). Linear, and cheap on strings, which
 * it skips with `indexOf`. (An integer too large to be exact needs no scan: `JSON.parse`
 * makes it an unsafe integer, which the checks reject.)
 */
export function hasAmbiguousNumber(text: string): boolean {
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      let j = text.indexOf('"', i + 1);
      while (j > 0) {
        let k = j - 1;
        while (text.charCodeAt(k) === 92 /* \ */) k--;
        if ((j - 1 - k) % 2 === 0) break;
        j = text.indexOf('"', j + 1);
      }
      if (j < 0) return false; // unterminated: JSON.parse rejects it
      i = j + 1;
    } else if (c === 45 /* - */ || (c >= 48 && c <= 57)) {
      const start = i;
      let plain = true;
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d >= 48 && d <= 57) {
          i++;
        } else if (d === 46 || d === 101 || d === 69 || d === 43 || d === 45) {
          plain = false;
          i++;
        } else {
          break;
        }
      }
      if (!plain && Number.isInteger(Number(text.slice(start, i)))) return true;
    } else {
      i++;
    }
  }
  return false;
}

/** Replaces every number token written with a fraction or exponent by a marked string. */
function markFractions(text: string): string {
  let out = "";
  let last = 0;
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      let j = text.indexOf('"', i + 1);
      while (j > 0) {
        let k = j - 1;
        while (text.charCodeAt(k) === 92) k--;
        if ((j - 1 - k) % 2 === 0) break;
        j = text.indexOf('"', j + 1);
      }
      if (j < 0) break;
      i = j + 1;
    } else if (c === 45 || (c >= 48 && c <= 57)) {
      const start = i;
      let plain = true;
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d >= 48 && d <= 57) i++;
        else if (d === 46 || d === 101 || d === 69 || d === 43 || d === 45) {
          plain = false;
          i++;
        } else break;
      }
      if (!plain) {
        out += text.slice(last, start) + JSON.stringify(MARK + text.slice(start, i));
        last = i;
      }
    } else {
      i++;
    }
  }
  return out + text.slice(last);
}

/** Turns the marked strings of `markFractions` back into numbers. */
function unmark(v: Json): Json {
  if (typeof v === "string") return v.startsWith(MARK) ? Number(v.slice(MARK.length)) : v;
  if (Array.isArray(v)) return v.map(unmark);
  if (v !== null && typeof v === "object") {
    const o: JsonObject = {};
    for (const k of Object.keys(v)) o[k] = unmark(v[k] as Json);
    return o;
  }
  return v;
}

/** Checks an event envelope (spec §2.2, `RW-EVENT-2`, `-5`, `-6`, `-7`). */
export function checkEvent(e: unknown): RunEvent {
  if (!isObject(e)) fail("an event must be an object");
  for (const k of ["event_id", "run_id", "type", "time"] as const) {
    const v = e[k];
    if (typeof v !== "string" || v.length === 0) fail(`event.${k} must be a non-empty string`);
  }
  uint(e.seq, "event.seq", 1);
  if (!RUN_ID.test(e.run_id as string)) fail("event.run_id does not match the run id pattern");
  const type = e.type as string;
  if (type.length > 128 || !EVENT_TYPE.test(type)) fail("event.type does not match the event type pattern");
  if (!TIME.test(e.time as string)) fail("event.time is not an RFC 3339 UTC timestamp ending in Z");
  if (!isObject(e.data)) fail("event.data must be an object");
  return e as unknown as RunEvent;
}

function checkSnapshot(s: unknown): void {
  if (!isObject(s)) fail("reset.snapshot must be an object");
  str(s.run_id, "reset.snapshot.run_id");
  str(s.epoch, "reset.snapshot.epoch");
  uint(s.as_of_seq, "reset.snapshot.as_of_seq");
}

/** Removes the members whose value is `null`: an optional member written as null is absent (`RW-CONV-7`). */
function dropNulls(o: unknown): void {
  if (isObject(o)) for (const k of Object.keys(o)) if (o[k] === null) delete o[k];
}

/** Checks a parsed message of a known type against its schema; returns it, or throws. */
function check(msg: JsonObject): KnownServerMessage | UnknownServerMessage {
  const t = msg.type;
  dropNulls(msg);
  if (t === "welcome") dropNulls(msg.limits);
  if (t === "reset") dropNulls(msg.snapshot);
  switch (t) {
    case "welcome": {
      str(msg.version, "welcome.version");
      uint(msg.heartbeat_interval_ms, "welcome.heartbeat_interval_ms", 1);
      optUint(msg.pong_timeout_ms, "welcome.pong_timeout_ms");
      optUint(msg.batch_window_ms, "welcome.batch_window_ms");
      optUint(msg.replay_window_events, "welcome.replay_window_events");
      const limits = msg.limits;
      if (limits !== undefined && limits !== null) {
        if (!isObject(limits)) fail("welcome.limits must be an object");
        for (const k of Object.keys(limits)) optUint(limits[k], `welcome.limits.${k}`);
      }
      break;
    }
    case "ping":
    case "pong": {
      const id = str(msg.id, `${t}.id`);
      if (id.length < 1 || id.length > 64) fail(`${t}.id must be 1-64 characters`);
      break;
    }
    case "subscribed":
      str(msg.run_id, "subscribed.run_id");
      str(msg.epoch, "subscribed.epoch");
      uint(msg.after_seq, "subscribed.after_seq");
      uint(msg.head_seq, "subscribed.head_seq");
      break;
    case "unsubscribed":
      str(msg.run_id, "unsubscribed.run_id");
      break;
    case "reset":
      str(msg.run_id, "reset.run_id");
      str(msg.epoch, "reset.epoch");
      optStr(msg.reason, "reset.reason");
      checkSnapshot(msg.snapshot);
      break;
    case "event":
      checkEvent(msg.event);
      break;
    case "batch": {
      const evs = msg.events;
      if (!Array.isArray(evs) || evs.length === 0) fail("batch.events must be a non-empty array");
      for (const e of evs) checkEvent(e);
      break;
    }
    case "error":
      str(msg.code, "error.code");
      str(msg.message, "error.message");
      if (typeof msg.retryable !== "boolean") fail("error.retryable must be a boolean");
      optStr(msg.run_id, "error.run_id");
      optUint(msg.close_code, "error.close_code");
      optUint(msg.retry_after_ms, "error.retry_after_ms");
      if (msg.supported_versions !== undefined && msg.supported_versions !== null) {
        const sv = msg.supported_versions;
        if (!Array.isArray(sv) || sv.some((v) => typeof v !== "string")) {
          fail("error.supported_versions must be an array of strings");
        }
      }
      break;
    default:
      break; // unknown types are ignored whole (RW-VERSION-5)
  }
  return msg as unknown as KnownServerMessage;
}

/**
 * Decodes one text frame of the server. Throws `DecodeError` for a frame the spec calls
 * undecodable (`RW-INPUT-12`); a message of an unknown type is returned as it is, to be
 * ignored (`RW-VERSION-5`).
 */
export function decodeFrame(text: string): KnownServerMessage | UnknownServerMessage {
  const ambiguous = hasAmbiguousNumber(text);
  let parsed: unknown;
  try {
    parsed = JSON.parse(ambiguous ? markFractions(text) : text);
  } catch (e) {
    fail(`invalid JSON: ${(e as Error).message}`);
  }
  if (!isObject(parsed)) fail("a frame must hold one JSON object");
  if (typeof parsed.type !== "string") fail("a frame needs a string `type`");
  if (!KNOWN_SERVER_TYPES.has(parsed.type)) {
    return (ambiguous ? unmark(parsed) : parsed) as UnknownServerMessage;
  }
  const msg = check(parsed);
  return ambiguous ? (unmark(msg as unknown as Json) as unknown as KnownServerMessage) : msg;
}
